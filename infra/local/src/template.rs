//! template.yaml as the one source of truth for local resources.
//!
//! The tables, queues (with their dead-letter queues), the KMS key, the
//! functions' environment and their schedules are read from the SAM
//! template and created on the local AWS under a stage name, so local runs
//! and tests use exactly the resources that AWS gets.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use adesync_runtime::aws::Clients;
use anyhow::{Context, Result, bail};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::Value;

/// The parts of template.yaml the local run needs.
#[derive(Debug, Clone)]
pub struct Template {
    pub tables: Vec<TableDef>,
    pub queues: Vec<QueueDef>,
    /// Logical ids of KMS keys.
    pub keys: Vec<String>,
    /// EventBridge buses: (logical id, name pattern).
    pub buses: Vec<(String, String)>,
    /// `Globals.Function.Environment.Variables`, unresolved.
    pub environment: BTreeMap<String, Value>,
    pub functions: Vec<FunctionDef>,
    /// Parameter defaults.
    pub parameters: HashMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDef {
    pub logical_id: String,
    pub name_pattern: String,
    /// (name, type `S`/`N`/`B`)
    pub attributes: Vec<(String, String)>,
    /// (name, `HASH`/`RANGE`)
    pub key_schema: Vec<(String, String)>,
    pub indexes: Vec<IndexDef>,
    pub ttl_attribute: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexDef {
    pub name: String,
    pub key_schema: Vec<(String, String)>,
    pub projection: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDef {
    pub logical_id: String,
    pub name_pattern: String,
    /// SQS queue attributes set by the template (`VisibilityTimeout`,
    /// `FifoQueue`, …): CloudFormation's property names are SQS's.
    pub attributes: BTreeMap<String, String>,
    /// (logical id of the dead-letter queue, maxReceiveCount)
    pub redrive: Option<(String, u32)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FunctionDef {
    pub logical_id: String,
    pub binary: String,
    pub timeout: Duration,
    /// SQS event sources: (queue logical id, batch size).
    pub queue_events: Vec<(String, u32)>,
    pub schedules: Vec<ScheduleDef>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleDef {
    pub name: String,
    pub every: Duration,
    pub input: Value,
}

impl Template {
    pub fn parse(yaml: &str) -> Result<Self> {
        let doc: Value =
            serde_yaml_ng::from_str(yaml).context("template.yaml is not valid YAML")?;
        let resources = doc["Resources"]
            .as_object()
            .context("template.yaml has no Resources")?;
        let default_timeout = doc["Globals"]["Function"]["Timeout"].as_u64().unwrap_or(3);
        let mut template = Template {
            tables: Vec::new(),
            queues: Vec::new(),
            keys: Vec::new(),
            buses: Vec::new(),
            environment: doc["Globals"]["Function"]["Environment"]["Variables"]
                .as_object()
                .map(|vars| vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
            functions: Vec::new(),
            parameters: doc["Parameters"]
                .as_object()
                .map(|params| {
                    params
                        .iter()
                        .filter_map(|(k, v)| Some((k.clone(), scalar(&v["Default"])?)))
                        .collect()
                })
                .unwrap_or_default(),
        };
        for (id, resource) in resources {
            let props = &resource["Properties"];
            match resource["Type"].as_str().unwrap_or_default() {
                "AWS::DynamoDB::Table" => template.tables.push(table(id, props)?),
                "AWS::SQS::Queue" => template.queues.push(queue(id, props)?),
                "AWS::KMS::Key" => template.keys.push(id.clone()),
                "AWS::Events::EventBus" => template
                    .buses
                    .push((id.clone(), name_pattern(&props["Name"], id)?)),
                "AWS::Serverless::Function" => {
                    template
                        .functions
                        .push(function(id, resource, default_timeout)?)
                }
                _ => {}
            }
        }
        Ok(template)
    }

    pub fn load(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Self::parse(&text)
    }

    pub fn function(&self, binary: &str) -> Option<&FunctionDef> {
        self.functions.iter().find(|f| f.binary == binary)
    }
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn name_pattern(value: &Value, id: &str) -> Result<String> {
    value
        .get("Fn::Sub")
        .and_then(Value::as_str)
        .or_else(|| value.as_str())
        .map(str::to_owned)
        .with_context(|| format!("{id}: the name must be a string or Fn::Sub"))
}

fn pairs(list: &Value, a: &str, b: &str) -> Vec<(String, String)> {
    list.as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| Some((scalar(&item[a])?, scalar(&item[b])?)))
                .collect()
        })
        .unwrap_or_default()
}

fn table(id: &str, props: &Value) -> Result<TableDef> {
    Ok(TableDef {
        logical_id: id.to_owned(),
        name_pattern: name_pattern(&props["TableName"], id)?,
        attributes: pairs(
            &props["AttributeDefinitions"],
            "AttributeName",
            "AttributeType",
        ),
        key_schema: pairs(&props["KeySchema"], "AttributeName", "KeyType"),
        indexes: props["GlobalSecondaryIndexes"]
            .as_array()
            .map(|indexes| {
                indexes
                    .iter()
                    .map(|index| IndexDef {
                        name: scalar(&index["IndexName"]).unwrap_or_default(),
                        key_schema: pairs(&index["KeySchema"], "AttributeName", "KeyType"),
                        projection: scalar(&index["Projection"]["ProjectionType"])
                            .unwrap_or_else(|| "ALL".into()),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        ttl_attribute: match &props["TimeToLiveSpecification"] {
            Value::Object(ttl) if ttl.get("Enabled") == Some(&Value::Bool(true)) => {
                ttl.get("AttributeName").and_then(scalar)
            }
            _ => None,
        },
    })
}

fn queue(id: &str, props: &Value) -> Result<QueueDef> {
    let redrive = match &props["RedrivePolicy"] {
        Value::Object(policy) => {
            let target = policy
                .get("deadLetterTargetArn")
                .and_then(|t| t.get("Fn::GetAtt"))
                .and_then(|g| g.get(0))
                .and_then(Value::as_str)
                .with_context(|| {
                    format!("{id}: deadLetterTargetArn must be Fn::GetAtt [Queue, Arn]")
                })?;
            let max = policy
                .get("maxReceiveCount")
                .and_then(|m| scalar(m)?.parse().ok())
                .with_context(|| format!("{id}: maxReceiveCount must be a number"))?;
            Some((target.to_owned(), max))
        }
        _ => None,
    };
    Ok(QueueDef {
        logical_id: id.to_owned(),
        name_pattern: name_pattern(&props["QueueName"], id)?,
        attributes: props
            .as_object()
            .map(|props| {
                props
                    .iter()
                    .filter(|(k, _)| !matches!(k.as_str(), "QueueName" | "RedrivePolicy" | "Tags"))
                    .filter_map(|(k, v)| Some((k.clone(), scalar(v)?)))
                    .collect()
            })
            .unwrap_or_default(),
        redrive,
    })
}

fn function(id: &str, resource: &Value, default_timeout: u64) -> Result<FunctionDef> {
    let props = &resource["Properties"];
    let binary = scalar(&resource["Metadata"]["BuildProperties"]["Binary"])
        .with_context(|| format!("{id}: Metadata.BuildProperties.Binary is missing"))?;
    let mut queue_events = Vec::new();
    let mut schedules = Vec::new();
    if let Some(events) = props["Events"].as_object() {
        for (name, event) in events {
            let event_props = &event["Properties"];
            match event["Type"].as_str().unwrap_or_default() {
                "SQS" => {
                    let queue = event_props["Queue"]["Fn::GetAtt"][0]
                        .as_str()
                        .with_context(|| format!("{id}.{name}: Queue must be Fn::GetAtt"))?;
                    let batch = event_props["BatchSize"].as_u64().unwrap_or(10);
                    queue_events.push((queue.to_owned(), u32::try_from(batch)?));
                }
                "Schedule" | "ScheduleV2" => {
                    let expression = scalar(&event_props["ScheduleExpression"])
                        .with_context(|| format!("{id}.{name}: no ScheduleExpression"))?;
                    let input = match scalar(&event_props["Input"]) {
                        Some(text) => serde_json::from_str(&text)
                            .with_context(|| format!("{id}.{name}: Input is not JSON"))?,
                        None => Value::Null,
                    };
                    schedules.push(ScheduleDef {
                        name: name.clone(),
                        every: parse_rate(&expression)
                            .with_context(|| format!("{id}.{name}: {expression}"))?,
                        input,
                    });
                }
                _ => {}
            }
        }
    }
    Ok(FunctionDef {
        logical_id: id.to_owned(),
        binary,
        timeout: Duration::from_secs(props["Timeout"].as_u64().unwrap_or(default_timeout)),
        queue_events,
        schedules,
    })
}

/// Parses `rate(N unit)` schedule expressions.
pub fn parse_rate(expression: &str) -> Result<Duration> {
    let inner = expression
        .strip_prefix("rate(")
        .and_then(|r| r.strip_suffix(')'))
        .context("only rate(...) schedules are supported locally")?;
    let (count, unit) = inner.split_once(' ').context("rate(N unit)")?;
    let count: u64 = count.parse()?;
    let seconds = match unit.trim_end_matches('s') {
        "minute" => 60,
        "hour" => 3600,
        "day" => 86_400,
        other => bail!("unknown rate unit {other}"),
    };
    Ok(Duration::from_secs(count * seconds))
}

/// Resources created on the local AWS for one stage.
#[derive(Debug, Clone)]
pub struct Deployed {
    pub stage: String,
    /// logical id → table name
    pub tables: HashMap<String, String>,
    /// logical id → queue URL
    pub queues: HashMap<String, String>,
    /// logical id → KMS key id
    pub keys: HashMap<String, String>,
    /// logical id → EventBridge bus name
    pub buses: HashMap<String, String>,
    pub template: Template,
}

impl Template {
    /// Creates every table, queue and key under `stage` (names with
    /// `${Stage}` replaced by it). Creating over existing resources of the
    /// same stage reuses them.
    pub async fn deploy(&self, clients: &Clients, stage: &str) -> Result<Deployed> {
        let mut deployed = Deployed {
            stage: stage.to_owned(),
            tables: HashMap::new(),
            queues: HashMap::new(),
            keys: HashMap::new(),
            buses: HashMap::new(),
            template: self.clone(),
        };
        let tables = self.tables.iter().map(|table| async move {
            let name = table.name_pattern.replace("${Stage}", stage);
            create_table(clients, table, &name).await?;
            Ok::<_, anyhow::Error>((table.logical_id.clone(), name))
        });
        for result in futures::future::join_all(tables).await {
            let (id, name) = result?;
            deployed.tables.insert(id, name);
        }
        // Dead-letter queues first: their ARNs go into the redrive policies.
        let mut queues: Vec<&QueueDef> = self.queues.iter().collect();
        queues.sort_by_key(|q| q.redrive.is_some());
        let mut arns = HashMap::new();
        for queue in queues {
            let name = queue.name_pattern.replace("${Stage}", stage);
            let (url, arn) = create_queue(clients, queue, &name, &arns).await?;
            arns.insert(queue.logical_id.clone(), arn);
            deployed.queues.insert(queue.logical_id.clone(), url);
        }
        for key in &self.keys {
            let created = clients
                .kms
                .create_key()
                .description(format!("adesync {stage} {key}"))
                .send()
                .await
                .context("CreateKey failed")?;
            let id = created
                .key_metadata()
                .map(|m| m.key_id().to_owned())
                .context("CreateKey returned no key id")?;
            deployed.keys.insert(key.clone(), id);
        }
        for (id, pattern) in &self.buses {
            // `${Stage}` and the parameters' defaults (`${EventBusName}`).
            let name = self
                .parameters
                .iter()
                .fold(pattern.replace("${Stage}", stage), |name, (k, v)| {
                    name.replace(&format!("${{{k}}}"), v)
                });
            match clients
                .eventbridge
                .create_event_bus()
                .name(&name)
                .send()
                .await
            {
                Ok(_) => {}
                // Creating over the same stage reuses it.
                Err(error)
                    if aws_sdk_eventbridge::error::ProvideErrorMetadata::code(&error)
                        == Some("ResourceAlreadyExistsException") => {}
                Err(error) => {
                    return Err(anyhow::Error::new(error).context(format!("CreateEventBus {name}")));
                }
            }
            deployed.buses.insert(id.clone(), name);
        }
        Ok(deployed)
    }
}

impl Deployed {
    /// The functions' environment variables, resolved as CloudFormation
    /// would (a table's Ref is its name, a queue's its URL, a key's its id),
    /// with parameters taken from `parameters` or their defaults.
    pub fn environment(
        &self,
        parameters: &HashMap<String, String>,
    ) -> Result<HashMap<String, String>> {
        self.template
            .environment
            .iter()
            .map(|(name, value)| {
                let resolved = match value {
                    Value::Object(o) if o.contains_key("Ref") => {
                        let target = o["Ref"].as_str().unwrap_or_default();
                        self.tables
                            .get(target)
                            .or_else(|| self.queues.get(target))
                            .or_else(|| self.keys.get(target))
                            .or_else(|| self.buses.get(target))
                            .or_else(|| parameters.get(target))
                            .or_else(|| self.template.parameters.get(target))
                            .cloned()
                            .with_context(|| format!("{name}: cannot resolve Ref {target}"))?
                    }
                    other => scalar(other).with_context(|| format!("{name}: unsupported value"))?,
                };
                Ok((name.clone(), resolved))
            })
            .collect()
    }

    /// The name of the bus `logical_id`.
    pub fn bus_name(&self, logical_id: &str) -> Result<&str> {
        self.buses
            .get(logical_id)
            .map(String::as_str)
            .with_context(|| format!("no event bus {logical_id} in template.yaml"))
    }

    pub fn queue_url(&self, logical_id: &str) -> Result<&str> {
        self.queues
            .get(logical_id)
            .map(String::as_str)
            .with_context(|| format!("no queue {logical_id} in template.yaml"))
    }

    /// Removes this stage's tables and queues (keys are left: KMS keys
    /// cannot be deleted at once, and emulators forget them anyway).
    pub async fn destroy(&self, clients: &Clients) -> Result<()> {
        for name in self.tables.values() {
            let _ = clients
                .dynamodb
                .delete_table()
                .table_name(name)
                .send()
                .await;
        }
        for url in self.queues.values() {
            let _ = clients.sqs.delete_queue().queue_url(url).send().await;
        }
        for name in self.buses.values() {
            let _ = clients
                .eventbridge
                .delete_event_bus()
                .name(name)
                .send()
                .await;
        }
        Ok(())
    }
}

fn key_schema(schema: &[(String, String)]) -> Result<Vec<KeySchemaElement>> {
    schema
        .iter()
        .map(|(name, kind)| {
            Ok(KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(KeyType::from(kind.as_str()))
                .build()?)
        })
        .collect()
}

async fn create_table(clients: &Clients, table: &TableDef, name: &str) -> Result<()> {
    let mut request = clients
        .dynamodb
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .set_key_schema(Some(key_schema(&table.key_schema)?));
    for (attribute, kind) in &table.attributes {
        request = request.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(attribute)
                .attribute_type(ScalarAttributeType::from(kind.as_str()))
                .build()?,
        );
    }
    for index in &table.indexes {
        request = request.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(&index.name)
                .set_key_schema(Some(key_schema(&index.key_schema)?))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::from(index.projection.as_str()))
                        .build(),
                )
                .build()?,
        );
    }
    match request.send().await {
        Ok(_) => {}
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_in_use_exception()) => {}
        Err(e) => return Err(anyhow::Error::new(e).context(format!("CreateTable {name} failed"))),
    }
    if let Some(attribute) = &table.ttl_attribute {
        let result = clients
            .dynamodb
            .update_time_to_live()
            .table_name(name)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name(attribute)
                    .enabled(true)
                    .build()?,
            )
            .send()
            .await;
        if let Err(e) = result {
            // Enabling TTL twice is refused; that is the state we want.
            let already = e
                .as_service_error()
                .map(|s| s.to_string().contains("already enabled"))
                .unwrap_or(false);
            if !already {
                return Err(
                    anyhow::Error::new(e).context(format!("UpdateTimeToLive {name} failed"))
                );
            }
        }
    }
    Ok(())
}

async fn create_queue(
    clients: &Clients,
    queue: &QueueDef,
    name: &str,
    arns: &HashMap<String, String>,
) -> Result<(String, String)> {
    let mut request = clients.sqs.create_queue().queue_name(name);
    for (attribute, value) in &queue.attributes {
        request = request.attributes(QueueAttributeName::from(attribute.as_str()), value);
    }
    if let Some((dlq, max)) = &queue.redrive {
        let arn = arns.get(dlq).with_context(|| {
            format!("{}: dead-letter queue {dlq} not created", queue.logical_id)
        })?;
        request = request.attributes(
            QueueAttributeName::RedrivePolicy,
            serde_json::json!({"deadLetterTargetArn": arn, "maxReceiveCount": max}).to_string(),
        );
    }
    let url = request
        .send()
        .await
        .with_context(|| format!("CreateQueue {name} failed"))?
        .queue_url
        .context("CreateQueue returned no URL")?;
    let arn = clients
        .sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .context("GetQueueAttributes failed")?
        .attributes
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .context("no QueueArn")?;
    Ok((url, arn))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project_template() -> Template {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../template.yaml");
        Template::load(&path).unwrap()
    }

    #[test]
    fn reads_the_projects_template() {
        let t = project_template();
        let mut tables: Vec<_> = t.tables.iter().map(|t| t.logical_id.as_str()).collect();
        tables.sort();
        assert_eq!(
            tables,
            [
                "AccountsTable",
                "DevicesTable",
                "PoliciesTable",
                "RunsTable",
                "TokensTable"
            ]
        );
        let devices = t
            .tables
            .iter()
            .find(|t| t.logical_id == "DevicesTable")
            .unwrap();
        assert_eq!(devices.ttl_attribute.as_deref(), Some("expires_at"));
        assert_eq!(devices.indexes[0].name, "by-policy");
        let batches = t
            .queues
            .iter()
            .find(|q| q.logical_id == "DeviceBatchesQueue")
            .unwrap();
        assert_eq!(
            batches.redrive,
            Some(("DeviceBatchesDeadLetterQueue".to_owned(), 5))
        );
        assert_eq!(batches.attributes["FifoQueue"], "true");
        let scheduler = t.function("sync-scheduler").unwrap();
        let delta = scheduler
            .schedules
            .iter()
            .find(|s| s.input["sweep"] == "delta")
            .unwrap();
        assert_eq!(delta.every, Duration::from_secs(12 * 3600));
        assert_eq!(
            t.function("device-importer").unwrap().queue_events,
            vec![("DeviceBatchesQueue".to_owned(), 1)]
        );
    }

    #[test]
    fn rates() {
        assert_eq!(
            parse_rate("rate(12 hours)").unwrap(),
            Duration::from_secs(43_200)
        );
        assert_eq!(
            parse_rate("rate(1 minute)").unwrap(),
            Duration::from_secs(60)
        );
        assert!(parse_rate("cron(0 12 * * ? *)").is_err());
    }
}
