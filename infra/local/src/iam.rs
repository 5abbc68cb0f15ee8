//! The template's IAM, checked against what the functions really do.
//!
//! The local AWS enforces no IAM, so a call the template does not grant
//! works here and is denied on AWS. Instead, every function's SDK clients
//! carry an interceptor ([`AwsActions::clients_for`]) that records each
//! request as the IAM action it needs, on which resource, and — for KMS —
//! under which encryption context. [`Grants`] reads what template.yaml grants
//! each function (SAM policy templates expanded to their actions, inline
//! statements, and the KMS key policy with its conditions), and
//! [`Grants::denied`] names every recorded call IAM would refuse. The
//! end-to-end harness fails a test whose functions made such a call, and
//! `adesync-local reliability` reports the grants no function used.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use adesync_runtime::aws::Clients;
use anyhow::{Context as _, Result, bail};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::template::Deployed;

/// The variable naming a directory where the test harness writes each
/// service's calls (one JSON file per stage) for the report of unused grants.
pub const RECORD_DIR: &str = "ADESYNC_IAM_RECORD_DIR";

/// The encryption-context key whose value the grants condition on.
const PURPOSE: &str = "adesync:purpose";

/// One AWS request of a function, as IAM sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AwsCall {
    /// The function's binary (`api`, `sync-worker`, …).
    pub function: String,
    /// The IAM action (`dynamodb:PutItem`, `kms:GenerateDataKey`).
    pub action: String,
    /// The physical resource: table name, queue URL or KMS key id.
    pub resource: String,
    /// KMS only: the `adesync:purpose` of the encryption context.
    pub purpose: Option<String>,
    /// KMS only: the keys of the encryption context.
    pub context_keys: Vec<String>,
}

/// Every distinct AWS call the functions of one local service made.
#[derive(Debug, Clone, Default)]
pub struct AwsActions {
    calls: Arc<Mutex<BTreeSet<AwsCall>>>,
}

impl AwsActions {
    /// The calls so far, sorted.
    pub fn calls(&self) -> Vec<AwsCall> {
        self.calls
            .lock()
            .map(|calls| calls.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// `clients` with every request recorded as `function`'s.
    pub fn clients_for(&self, clients: &Clients, function: &str) -> Clients {
        let recorder = Recorder {
            function: function.to_owned(),
            actions: self.clone(),
        };
        Clients {
            dynamodb: aws_sdk_dynamodb::Client::from_conf(
                clients
                    .dynamodb
                    .config()
                    .to_builder()
                    .interceptor(recorder.clone())
                    .build(),
            ),
            sqs: aws_sdk_sqs::Client::from_conf(
                clients
                    .sqs
                    .config()
                    .to_builder()
                    .interceptor(recorder.clone())
                    .build(),
            ),
            kms: aws_sdk_kms::Client::from_conf(
                clients
                    .kms
                    .config()
                    .to_builder()
                    .interceptor(recorder.clone())
                    .build(),
            ),
            eventbridge: aws_sdk_eventbridge::Client::from_conf(
                clients
                    .eventbridge
                    .config()
                    .to_builder()
                    .interceptor(recorder)
                    .build(),
            ),
        }
    }

    fn record(&self, calls: Vec<AwsCall>) {
        if let Ok(mut all) = self.calls.lock() {
            all.extend(calls);
        }
    }
}

#[derive(Debug, Clone)]
struct Recorder {
    function: String,
    actions: AwsActions,
}

impl Intercept for Recorder {
    fn name(&self) -> &'static str {
        "RecordIamActions"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request();
        // All three services speak AWS JSON: the operation is in the target
        // header and the body (in memory) names the resources.
        // A request in another protocol is recorded as unknown, so it
        // counts as denied until this check learns to read it.
        let target = request
            .headers()
            .get("x-amz-target")
            .unwrap_or("Unknown.RequestWithoutTarget");
        let body: Value = request
            .body()
            .bytes()
            .and_then(|bytes| serde_json::from_slice(bytes).ok())
            .unwrap_or(Value::Null);
        self.actions.record(
            iam_calls(target, &body)
                .into_iter()
                .map(|call| AwsCall {
                    function: self.function.clone(),
                    ..call
                })
                .collect(),
        );
        Ok(())
    }
}

/// The IAM actions one request needs (`function` left empty).
///
/// IAM authorises some operations through others: a transaction through
/// the item actions it contains, a batch of messages through the single
/// message action.
pub fn iam_calls(target: &str, body: &Value) -> Vec<AwsCall> {
    let Some((prefix, operation)) = target.split_once('.') else {
        return Vec::new();
    };
    let call = |action: String, resource: &str| AwsCall {
        function: String::new(),
        action,
        resource: resource.to_owned(),
        purpose: None,
        context_keys: Vec::new(),
    };
    let text = |field: &str| body[field].as_str().unwrap_or_default().to_owned();
    if prefix.starts_with("DynamoDB") {
        match operation {
            "TransactWriteItems" | "TransactGetItems" => body["TransactItems"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|item| item.as_object()?.iter().next())
                .map(|(kind, part)| {
                    let action = match kind.as_str() {
                        "Put" => "PutItem",
                        "Update" => "UpdateItem",
                        "Delete" => "DeleteItem",
                        "ConditionCheck" => "ConditionCheckItem",
                        _ => "GetItem",
                    };
                    call(
                        format!("dynamodb:{action}"),
                        part["TableName"].as_str().unwrap_or_default(),
                    )
                })
                .collect(),
            "BatchWriteItem" | "BatchGetItem" => body["RequestItems"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(table, _)| call(format!("dynamodb:{operation}"), table))
                .collect(),
            // IAM authorises a read of an index on the index's own ARN.
            _ => {
                let resource = match body["IndexName"].as_str() {
                    Some(index) => format!("{}/index/{index}", text("TableName")),
                    None => text("TableName"),
                };
                vec![call(format!("dynamodb:{operation}"), &resource)]
            }
        }
    } else if prefix.starts_with("AmazonSQS") {
        let action = operation.strip_suffix("Batch").unwrap_or(operation);
        vec![call(format!("sqs:{action}"), &text("QueueUrl"))]
    } else if prefix == "AWSEvents" && operation == "PutEvents" {
        // Each entry is authorised on its own bus (no name: the default bus).
        let buses: BTreeSet<&str> = body["Entries"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|entry| entry["EventBusName"].as_str().unwrap_or("default"))
            .collect();
        buses
            .into_iter()
            .map(|bus| call("events:PutEvents".into(), bus))
            .collect()
    } else if prefix.starts_with("TrentService") {
        let context = body["EncryptionContext"].as_object();
        vec![AwsCall {
            purpose: context
                .and_then(|c| c.get(PURPOSE))
                .and_then(Value::as_str)
                .map(str::to_owned),
            context_keys: context
                .map(|c| c.keys().cloned().collect())
                .unwrap_or_default(),
            ..call(format!("kms:{operation}"), &text("KeyId"))
        }]
    } else {
        vec![call(format!("{prefix}:{operation}"), "")]
    }
}

/// One `Allow` statement: actions (IAM wildcards allowed) on resources
/// (logical ids of the template; `*` for any), under conditions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Where it comes from, for reports (`DynamoDBCrudPolicy TokensTable`).
    pub source: String,
    pub actions: Vec<String>,
    pub resources: Vec<String>,
    pub conditions: Vec<Condition>,
}

/// The condition forms the template uses on KMS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// `StringEquals: {kms:EncryptionContext:<key>: [values]}`
    ContextEquals { key: String, values: Vec<String> },
    /// `Null: {kms:EncryptionContext:<key>: "false"}`: the key is present.
    ContextPresent { key: String },
}

/// What template.yaml grants: each function's role, and each KMS key's
/// policy (which IAM must pass too).
#[derive(Debug, Clone, Default)]
pub struct Grants {
    /// function binary → its role's statements
    pub functions: BTreeMap<String, Vec<Grant>>,
    /// KMS key logical id → its key policy's statements for the account
    pub keys: BTreeMap<String, Vec<Grant>>,
}

impl Grants {
    /// Reads the grants of template.yaml; a policy form it cannot expand is
    /// an error, so no grant is silently ignored.
    pub fn parse(yaml: &str) -> Result<Self> {
        let doc: Value =
            serde_yaml_ng::from_str(yaml).context("template.yaml is not valid YAML")?;
        let resources = doc["Resources"]
            .as_object()
            .context("template.yaml has no Resources")?;
        let mut grants = Grants::default();
        for (id, resource) in resources {
            match resource["Type"].as_str().unwrap_or_default() {
                "AWS::Serverless::Function" => {
                    let binary = resource["Metadata"]["BuildProperties"]["Binary"]
                        .as_str()
                        .with_context(|| format!("{id}: no Metadata.BuildProperties.Binary"))?;
                    let mut statements = Vec::new();
                    for policy in resource["Properties"]["Policies"]
                        .as_array()
                        .into_iter()
                        .flatten()
                    {
                        statements.extend(
                            function_policy(policy).with_context(|| format!("{id}.Policies"))?,
                        );
                    }
                    grants.functions.insert(binary.to_owned(), statements);
                }
                "AWS::KMS::Key" => {
                    let mut statements = Vec::new();
                    for statement in resource["Properties"]["KeyPolicy"]["Statement"]
                        .as_array()
                        .into_iter()
                        .flatten()
                    {
                        let principal = &statement["Principal"]["AWS"]["Fn::Sub"];
                        // Only the account's own IAM principals reach the
                        // functions; anything else in a key policy is not for them.
                        if principal.as_str().is_some_and(|p| p.ends_with(":root")) {
                            let mut grant = statement_grant(statement, id)
                                .with_context(|| format!("{id}.KeyPolicy"))?;
                            grant.resources = vec![id.clone()];
                            statements.push(grant);
                        }
                    }
                    grants.keys.insert(id.clone(), statements);
                }
                _ => {}
            }
        }
        Ok(grants)
    }

    /// Every call in `calls` (resources named by logical id, see
    /// [`by_logical_id`]) that IAM would deny, with the reason.
    pub fn denied(&self, calls: &[AwsCall]) -> Vec<String> {
        calls
            .iter()
            .filter_map(|call| {
                let resource = Some(call.resource.clone()).filter(|r| !r.is_empty());
                let role = self
                    .functions
                    .get(&call.function)
                    .map_or(&[][..], Vec::as_slice);
                if !role
                    .iter()
                    .any(|grant| grant.allows(call, resource.as_deref()))
                {
                    return Some(format!(
                        "{} calls {} on {} ({}) but its role in template.yaml does not grant it",
                        call.function,
                        call.action,
                        resource.as_deref().unwrap_or("an unknown resource"),
                        describe_context(call),
                    ));
                }
                if call.action.starts_with("kms:")
                    && let Some(key) = resource.as_deref()
                    && !self
                        .keys
                        .get(key)
                        .is_some_and(|policy| policy.iter().any(|g| g.allows(call, Some(key))))
                {
                    return Some(format!(
                        "{} calls {} on {key} ({}) but the key policy does not allow it",
                        call.function,
                        call.action,
                        describe_context(call),
                    ));
                }
                None
            })
            .collect()
    }

    /// For every function, each of its grants with the actions no call of
    /// `calls` used (an empty list: all used).
    pub fn unused(&self, calls: &[AwsCall]) -> BTreeMap<String, Vec<(String, Vec<String>)>> {
        let mut report = BTreeMap::new();
        for (function, grants) in &self.functions {
            let mine: Vec<(&AwsCall, Option<String>)> = calls
                .iter()
                .filter(|c| &c.function == function)
                .map(|c| (c, Some(c.resource.clone())))
                .collect();
            let rows = grants
                .iter()
                .map(|grant| {
                    let unused = grant
                        .actions
                        .iter()
                        .filter(|action| {
                            !mine.iter().any(|(call, resource)| {
                                action_matches(action, &call.action)
                                    && grant.allows(call, resource.as_deref())
                            })
                        })
                        .cloned()
                        .collect();
                    (grant.source.clone(), unused)
                })
                .collect();
            report.insert(function.clone(), rows);
        }
        report
    }
}

impl Grant {
    fn allows(&self, call: &AwsCall, resource: Option<&str>) -> bool {
        let on_resource = self.resources.iter().any(|granted| {
            granted == "*" || resource.is_some_and(|resource| glob(granted, resource))
        });
        self.actions.iter().any(|a| action_matches(a, &call.action))
            && on_resource
            && self.conditions.iter().all(|c| c.holds(call))
    }
}

impl Condition {
    fn holds(&self, call: &AwsCall) -> bool {
        match self {
            Condition::ContextEquals { key, values } if key == PURPOSE => call
                .purpose
                .as_ref()
                .is_some_and(|purpose| values.contains(purpose)),
            // Only the purpose's value is recorded; a condition on another
            // key's value cannot be shown to hold.
            Condition::ContextEquals { .. } => false,
            Condition::ContextPresent { key } => call.context_keys.contains(key),
        }
    }
}

fn describe_context(call: &AwsCall) -> String {
    match &call.purpose {
        Some(purpose) => format!("purpose {purpose}"),
        None if call.action.starts_with("kms:") => "no purpose in its encryption context".into(),
        None => "no encryption context".into(),
    }
}

/// IAM action names are case-insensitive and take `*` wildcards.
fn action_matches(pattern: &str, action: &str) -> bool {
    glob(&pattern.to_ascii_lowercase(), &action.to_ascii_lowercase())
}

/// Whether `text` matches `pattern`, where `*` stands for any run of
/// characters (IAM's wildcard in actions and resource ARNs).
fn glob(pattern: &str, text: &str) -> bool {
    fn bytes(pattern: &[u8], text: &[u8]) -> bool {
        match pattern.split_first() {
            None => text.is_empty(),
            Some((b'*', rest)) => (0..=text.len()).any(|skip| bytes(rest, &text[skip..])),
            Some((c, rest)) => text.first() == Some(c) && bytes(rest, &text[1..]),
        }
    }
    bytes(pattern.as_bytes(), text.as_bytes())
}

/// `calls` with each resource named by its logical id in the template (as
/// the grants name them), or left empty when the stage has no such resource.
pub fn by_logical_id(calls: Vec<AwsCall>, deployed: &Deployed) -> Vec<AwsCall> {
    calls
        .into_iter()
        .map(|call| AwsCall {
            resource: logical_id(deployed, &call).unwrap_or_default(),
            ..call
        })
        .collect()
}

/// The template's logical id of the resource `call` names.
fn logical_id(deployed: &Deployed, call: &AwsCall) -> Option<String> {
    let named = |map: &std::collections::HashMap<String, String>,
                 matches: &dyn Fn(&str) -> bool| {
        map.iter()
            .find(|(_, physical)| matches(physical))
            .map(|(logical, _)| logical.clone())
    };
    let resource = call.resource.as_str();
    match call.action.split(':').next() {
        Some("dynamodb") => {
            let (table, index) = match resource.split_once("/index/") {
                Some((table, index)) => (table, Some(index)),
                None => (resource, None),
            };
            let logical = named(&deployed.tables, &|name| name == table)?;
            Some(match index {
                Some(index) => format!("{logical}/index/{index}"),
                None => logical,
            })
        }
        Some("sqs") => named(&deployed.queues, &|url| url == resource),
        // A bus is named by name or ARN (`…:event-bus/<name>`).
        Some("events") => named(&deployed.buses, &|name| {
            resource == name || resource.ends_with(&format!(":event-bus/{name}"))
        }),
        // A key is named by id, ARN or alias; the deployed id ends them all.
        Some("kms") => named(&deployed.keys, &|id| {
            !resource.is_empty()
                && (id == resource || resource.ends_with(id) || id.ends_with(resource))
        }),
        _ => None,
    }
}

/// The statements one entry of a function's `Policies` stands for.
fn function_policy(policy: &Value) -> Result<Vec<Grant>> {
    let Some((name, parameters)) = policy.as_object().and_then(|o| o.iter().next()) else {
        bail!("a policy must be a SAM policy template or a Statement list: {policy}");
    };
    let sam = |actions: &[&str], parameter: &str| -> Result<Vec<Grant>> {
        let resource = reference(&parameters[parameter])
            .with_context(|| format!("{name}: {parameter} must be a Ref or Fn::GetAtt"))?;
        // SAM's DynamoDB templates grant the table and all its indexes.
        let mut resources = vec![resource.clone()];
        if name.starts_with("DynamoDB") {
            resources.push(format!("{resource}/index/*"));
        }
        Ok(vec![Grant {
            source: format!("{name} {resource}"),
            actions: actions.iter().map(|a| (*a).to_owned()).collect(),
            resources,
            conditions: Vec::new(),
        }])
    };
    // The expansions of SAM's policy templates (samtranslator's
    // policy_templates.json), for the templates this project uses.
    match name.as_str() {
        "DynamoDBCrudPolicy" => sam(
            &[
                "dynamodb:GetItem",
                "dynamodb:DeleteItem",
                "dynamodb:PutItem",
                "dynamodb:Scan",
                "dynamodb:Query",
                "dynamodb:UpdateItem",
                "dynamodb:BatchWriteItem",
                "dynamodb:BatchGetItem",
                "dynamodb:DescribeTable",
                "dynamodb:ConditionCheckItem",
            ],
            "TableName",
        ),
        "DynamoDBReadPolicy" => sam(
            &[
                "dynamodb:GetItem",
                "dynamodb:Scan",
                "dynamodb:Query",
                "dynamodb:BatchGetItem",
                "dynamodb:DescribeTable",
            ],
            "TableName",
        ),
        "SQSSendMessagePolicy" => sam(&["sqs:SendMessage*"], "QueueName"),
        "SQSPollerPolicy" => sam(
            &[
                "sqs:ChangeMessageVisibility",
                "sqs:ChangeMessageVisibilityBatch",
                "sqs:DeleteMessage",
                "sqs:DeleteMessageBatch",
                "sqs:GetQueueAttributes",
                "sqs:ReceiveMessage",
            ],
            "QueueName",
        ),
        "KMSDecryptPolicy" => sam(&["kms:Decrypt"], "KeyId"),
        "EventBridgePutEventsPolicy" => sam(&["events:PutEvents"], "EventBusName"),
        "Statement" => parameters
            .as_array()
            .context("Statement must be a list")?
            .iter()
            .map(|statement| statement_grant(statement, "inline"))
            .collect(),
        other => bail!(
            "{other} is not a policy template this check expands; add its actions to infra/local/src/iam.rs"
        ),
    }
}

fn statement_grant(statement: &Value, source: &str) -> Result<Grant> {
    if statement["Effect"].as_str() != Some("Allow") {
        bail!("only Allow statements are understood: {statement}");
    }
    let list = |value: &Value| -> Vec<Value> {
        match value {
            Value::Array(items) => items.clone(),
            Value::Null => Vec::new(),
            other => vec![other.clone()],
        }
    };
    let actions = list(&statement["Action"])
        .iter()
        .map(|a| {
            a.as_str()
                .map(str::to_owned)
                .context("an Action must be a string")
        })
        .collect::<Result<Vec<_>>>()?;
    let resources = list(&statement["Resource"])
        .iter()
        .map(|r| match r.as_str() {
            Some("*") => Ok("*".to_owned()),
            _ => {
                reference(r).with_context(|| format!("Resource {r} must be *, a Ref or Fn::GetAtt"))
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let mut conditions = Vec::new();
    if let Some(blocks) = statement["Condition"].as_object() {
        for (operator, block) in blocks {
            for (key, value) in block
                .as_object()
                .context("a Condition block must be a map")?
            {
                let context_key = key
                    .strip_prefix("kms:EncryptionContext:")
                    .with_context(|| format!("the condition key {key} is not understood"))?
                    .to_owned();
                let values: Vec<String> = list(value)
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect();
                conditions.push(match operator.as_str() {
                    "StringEquals" => Condition::ContextEquals {
                        key: context_key,
                        values,
                    },
                    "Null" if values == ["false"] => Condition::ContextPresent { key: context_key },
                    other => bail!("the condition operator {other} on {key} is not understood"),
                });
            }
        }
    }
    let sid = statement["Sid"].as_str().unwrap_or(source);
    Ok(Grant {
        source: format!("{sid}: {}", actions.join(", ")),
        actions,
        resources,
        conditions,
    })
}

/// The logical id of `{Ref: X}`, `{Fn::GetAtt: [X, …]}` or `!Sub ${X.Arn}…`.
fn reference(value: &Value) -> Option<String> {
    if let Some(id) = value["Ref"].as_str() {
        return Some(id.to_owned());
    }
    if let Some(id) = value["Fn::GetAtt"][0].as_str() {
        return Some(id.to_owned());
    }
    // `${Table.Arn}/index/*`: the table's indexes, named as the calls name them.
    let sub = value["Fn::Sub"].as_str()?;
    let (inner, rest) = sub.strip_prefix("${")?.split_once('}')?;
    Some(format!("{}{rest}", inner.split('.').next()?))
}

/// The calls every test service of a run wrote to `dir` (see
/// [`RECORD_DIR`]), merged.
pub fn read_recorded(dir: &std::path::Path) -> Result<Vec<AwsCall>> {
    let mut all = BTreeSet::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            let calls: Vec<AwsCall> = serde_json::from_slice(&std::fs::read(&path)?)
                .with_context(|| format!("{} is not a list of AWS calls", path.display()))?;
            all.extend(calls);
        }
    }
    Ok(all.into_iter().collect())
}

/// The IAM section of docs/reliability.md: what each function did, what
/// the template would deny, and what it grants that no function used.
pub fn render(grants: &Grants, calls: &[AwsCall]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let denied = grants.denied(calls);
    let _ = writeln!(
        out,
        "{} distinct calls (function, action, resource, KMS purpose) recorded; {} denied by template.yaml.\n",
        calls.len(),
        denied.len()
    );
    for line in &denied {
        let _ = writeln!(out, "- **denied**: {line}");
    }
    if !denied.is_empty() {
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "| function | calls made (resource: actions) | grants no call used |"
    );
    let _ = writeln!(out, "|---|---|---|");
    let unused = grants.unused(calls);
    for (function, rows) in &unused {
        let mut made: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for call in calls.iter().filter(|c| &c.function == function) {
            let action = match &call.purpose {
                Some(purpose) => format!("{} ({purpose})", short(&call.action)),
                None => short(&call.action).to_owned(),
            };
            made.entry(call.resource.clone())
                .or_default()
                .insert(action);
        }
        let made = made
            .iter()
            .map(|(resource, actions)| {
                format!(
                    "{resource}: {}",
                    actions.iter().cloned().collect::<Vec<_>>().join(", ")
                )
            })
            .collect::<Vec<_>>()
            .join("<br>");
        let idle = rows
            .iter()
            .filter(|(_, actions)| !actions.is_empty())
            .map(|(source, actions)| {
                let all = grants.functions[function]
                    .iter()
                    .find(|g| &g.source == source)
                    .is_some_and(|g| g.actions.len() == actions.len());
                if all {
                    format!("**{source}: all of it**")
                } else {
                    format!(
                        "{source}: {}",
                        actions
                            .iter()
                            .map(|a| short(a))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            })
            .collect::<Vec<_>>()
            .join("<br>");
        let _ = writeln!(
            out,
            "| {function} | {} | {} |",
            if made.is_empty() { "none" } else { &made },
            if idle.is_empty() { "none" } else { &idle }
        );
    }
    out
}

/// `PutItem` for `dynamodb:PutItem`.
fn short(action: &str) -> &str {
    action.split_once(':').map_or(action, |(_, name)| name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_read_as_the_iam_actions_they_need() {
        let put = iam_calls("DynamoDB_20120810.PutItem", &json!({"TableName": "t"}));
        assert_eq!(
            (put[0].action.as_str(), put[0].resource.as_str()),
            ("dynamodb:PutItem", "t")
        );
        let transaction = iam_calls(
            "DynamoDB_20120810.TransactWriteItems",
            &json!({"TransactItems": [
                {"Update": {"TableName": "a"}},
                {"ConditionCheck": {"TableName": "b"}},
            ]}),
        );
        let actions: Vec<_> = transaction
            .iter()
            .map(|c| (c.action.as_str(), c.resource.as_str()))
            .collect();
        assert_eq!(
            actions,
            [
                ("dynamodb:UpdateItem", "a"),
                ("dynamodb:ConditionCheckItem", "b")
            ]
        );
        let batch = iam_calls("AmazonSQS.SendMessageBatch", &json!({"QueueUrl": "q"}));
        assert_eq!(batch[0].action, "sqs:SendMessage");
        let seal = iam_calls(
            "TrentService.GenerateDataKey",
            &json!({"KeyId": "k", "EncryptionContext": {"adesync:purpose": "apple-session", "adesync:account": "a"}}),
        );
        assert_eq!(seal[0].purpose.as_deref(), Some("apple-session"));
        assert_eq!(seal[0].context_keys, ["adesync:account", "adesync:purpose"]);
    }

    #[test]
    fn a_read_of_an_index_needs_the_index_granted() {
        let query = iam_calls(
            "DynamoDB_20120810.Query",
            &json!({"TableName": "adesync-x-table", "IndexName": "by-policy"}),
        );
        assert_eq!(query[0].resource, "adesync-x-table/index/by-policy");
        let calls = by_logical_id(
            vec![AwsCall {
                function: "worker".into(),
                ..query[0].clone()
            }],
            &deployed(),
        );
        assert_eq!(calls[0].resource, "Table/index/by-policy");
        // SAM's CRUD template grants the indexes …
        assert_eq!(
            Grants::parse(TEMPLATE).unwrap().denied(&calls),
            Vec::<String>::new()
        );
        // … an inline statement on the table's ARN alone does not.
        let table_only = TEMPLATE.replace(
            "        - DynamoDBCrudPolicy: {TableName: {Ref: Table}}\n",
            "        - Statement:\n            - Effect: Allow\n              Action: dynamodb:Query\n              Resource: {\"Fn::GetAtt\": [Table, Arn]}\n",
        );
        assert_eq!(Grants::parse(&table_only).unwrap().denied(&calls).len(), 1);
        let with_indexes = table_only.replace(
            "              Resource: {\"Fn::GetAtt\": [Table, Arn]}\n",
            "              Resource:\n                - {\"Fn::GetAtt\": [Table, Arn]}\n                - {\"Fn::Sub\": \"${Table.Arn}/index/*\"}\n",
        );
        assert_eq!(
            Grants::parse(&with_indexes).unwrap().denied(&calls),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_request_the_check_cannot_read_is_denied() {
        let unknown = iam_calls("Unknown.RequestWithoutTarget", &Value::Null);
        let calls = by_logical_id(
            vec![AwsCall {
                function: "worker".into(),
                ..unknown[0].clone()
            }],
            &deployed(),
        );
        assert_eq!(Grants::parse(TEMPLATE).unwrap().denied(&calls).len(), 1);
    }

    #[test]
    fn wildcards_match_as_iam_does() {
        assert!(action_matches("sqs:SendMessage*", "sqs:SendMessage"));
        assert!(action_matches("sqs:SendMessage*", "sqs:sendmessagebatch"));
        assert!(!action_matches("sqs:SendMessage*", "sqs:ReceiveMessage"));
        assert!(action_matches("kms:*", "kms:Decrypt"));
        assert!(action_matches("kms:Generate*Key", "kms:GenerateDataKey"));
        assert!(!action_matches("kms:Decrypt", "kms:DecryptAll"));
    }

    const TEMPLATE: &str = r#"
Resources:
  Key:
    Type: AWS::KMS::Key
    Properties:
      KeyPolicy:
        Statement:
          - Sid: Use
            Effect: Allow
            Principal: {AWS: {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}}
            Action: [kms:Decrypt, kms:GenerateDataKey]
            Resource: "*"
            Condition:
              "Null": {"kms:EncryptionContext:adesync:account": "false"}
  Table:
    Type: AWS::DynamoDB::Table
    Properties: {TableName: table}
  Worker:
    Type: AWS::Serverless::Function
    Metadata: {BuildProperties: {Binary: worker}}
    Properties:
      Policies:
        - DynamoDBCrudPolicy: {TableName: {Ref: Table}}
        - Statement:
            - Effect: Allow
              Action: kms:Decrypt
              Resource: {"Fn::GetAtt": [Key, Arn]}
              Condition:
                StringEquals: {"kms:EncryptionContext:adesync:purpose": [token-credentials]}
"#;

    fn deployed() -> Deployed {
        Deployed {
            stage: "x".into(),
            tables: [("Table".to_owned(), "adesync-x-table".to_owned())].into(),
            queues: Default::default(),
            keys: [("Key".to_owned(), "key-1".to_owned())].into(),
            buses: [("Bus".to_owned(), "adesync-x".to_owned())].into(),
            template: crate::template::Template::parse(TEMPLATE).unwrap(),
        }
    }

    fn call(action: &str, resource: &str, purpose: Option<&str>) -> AwsCall {
        AwsCall {
            function: "worker".into(),
            action: action.into(),
            resource: resource.into(),
            purpose: purpose.map(str::to_owned),
            context_keys: purpose
                .map(|_| vec!["adesync:account".to_owned(), PURPOSE.to_owned()])
                .unwrap_or_default(),
        }
    }

    #[test]
    fn a_call_outside_the_role_or_the_key_policy_is_denied() {
        let grants = Grants::parse(TEMPLATE).unwrap();
        let deployed = deployed();
        let granted = [
            call("dynamodb:UpdateItem", "adesync-x-table", None),
            call(
                "kms:Decrypt",
                "arn:aws:kms:us-east-1:1:key/key-1",
                Some("token-credentials"),
            ),
        ];
        assert_eq!(
            grants.denied(&by_logical_id(granted.to_vec(), &deployed)),
            Vec::<String>::new()
        );
        let denied = grants.denied(&by_logical_id(
            vec![
                call("dynamodb:UpdateItem", "another-table", None),
                call("kms:GenerateDataKey", "key-1", Some("apple-session")),
                call("kms:Decrypt", "key-1", Some("account-key")),
                AwsCall {
                    context_keys: vec![PURPOSE.to_owned()],
                    ..call("kms:Decrypt", "key-1", Some("token-credentials"))
                },
            ],
            &deployed,
        ));
        assert_eq!(denied.len(), 4, "{denied:#?}");
        assert!(denied[0].contains("an unknown resource"), "{}", denied[0]);
        assert!(denied[1].contains("kms:GenerateDataKey on Key (purpose apple-session)"));
        assert!(
            denied[2].contains("kms:Decrypt on Key (purpose account-key)")
                && denied[2].contains("its role"),
            "{}",
            denied[2]
        );
        assert!(denied[3].contains("key policy"), "{}", denied[3]);
    }

    #[test]
    fn events_are_put_on_the_buses_granted_and_no_other() {
        let put = iam_calls(
            "AWSEvents.PutEvents",
            &json!({"Entries": [
                {"EventBusName": "adesync-x", "Source": "adesync"},
                {"EventBusName": "adesync-x", "Source": "adesync"},
                {"EventBusName": "arn:aws:events:us-east-1:1:event-bus/other"},
                {"Source": "adesync"},
            ]}),
        );
        let buses: Vec<&str> = put.iter().map(|c| c.resource.as_str()).collect();
        assert_eq!(
            buses,
            [
                "adesync-x",
                "arn:aws:events:us-east-1:1:event-bus/other",
                "default"
            ]
        );
        assert!(put.iter().all(|c| c.action == "events:PutEvents"));
        let with_bus = TEMPLATE.replace(
            "        - DynamoDBCrudPolicy: {TableName: {Ref: Table}}\n",
            "        - DynamoDBCrudPolicy: {TableName: {Ref: Table}}\n        - EventBridgePutEventsPolicy: {EventBusName: {Ref: Bus}}\n",
        );
        let calls = |calls: Vec<AwsCall>| {
            by_logical_id(
                calls
                    .into_iter()
                    .map(|c| AwsCall {
                        function: "worker".into(),
                        ..c
                    })
                    .collect(),
                &deployed(),
            )
        };
        let ours = calls(put[..1].to_vec());
        assert_eq!(ours[0].resource, "Bus");
        let arn = calls(vec![AwsCall {
            resource: "arn:aws:events:us-east-1:1:event-bus/adesync-x".into(),
            ..put[0].clone()
        }]);
        assert_eq!(arn[0].resource, "Bus", "a bus named by its ARN");
        let granted = Grants::parse(&with_bus).unwrap();
        assert_eq!(granted.denied(&ours), Vec::<String>::new());
        assert_eq!(
            granted.denied(&calls(put[1..].to_vec())).len(),
            2,
            "other buses"
        );
        // Without the grant, even our own bus is denied.
        assert_eq!(Grants::parse(TEMPLATE).unwrap().denied(&ours).len(), 1);
    }

    #[test]
    fn unused_grants_are_listed_per_statement() {
        let grants = Grants::parse(TEMPLATE).unwrap();
        let report = grants.unused(&by_logical_id(
            vec![call("dynamodb:GetItem", "adesync-x-table", None)],
            &deployed(),
        ));
        let rows = &report["worker"];
        assert_eq!(rows[0].0, "DynamoDBCrudPolicy Table");
        assert!(!rows[0].1.contains(&"dynamodb:GetItem".to_owned()));
        assert!(rows[0].1.contains(&"dynamodb:PutItem".to_owned()));
        assert_eq!(rows[1].1, ["kms:Decrypt"]);
    }

    #[test]
    fn a_policy_form_the_check_cannot_read_is_an_error() {
        let template = TEMPLATE.replace("DynamoDBCrudPolicy", "S3CrudPolicy");
        let error = Grants::parse(&template).unwrap_err();
        assert!(format!("{error:#}").contains("S3CrudPolicy"), "{error:#}");
    }

    #[test]
    fn the_projects_template_expands() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../template.yaml");
        let grants = Grants::parse(&std::fs::read_to_string(path).unwrap()).unwrap();
        for function in [
            "api",
            "sync-trigger",
            "sync-scheduler",
            "sync-worker",
            "device-importer",
        ] {
            assert!(grants.functions.contains_key(function), "{function}");
        }
        assert!(grants.keys.contains_key("SecretsKey"));
    }
}
