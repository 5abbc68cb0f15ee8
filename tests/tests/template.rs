//! template.yaml is the one source of truth: it is valid SAM, and the local
//! resources are exactly what it declares.

use std::collections::BTreeMap;

use adesync_local::template::Template;
use adesync_local::tools::{self, Workspace};
use adesync_tests::TestService;
use aws_sdk_sqs::types::QueueAttributeName;

#[test]
fn sam_validate_lint_passes() {
    let workspace = Workspace::locate().unwrap();
    let tools = tools::ensure(&workspace).expect("the local tools install");
    let output = std::process::Command::new(tools.sam())
        .args(["validate", "--lint", "--template"])
        .arg(workspace.template_path())
        .env("SAM_CLI_TELEMETRY", "0")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .output()
        .expect("sam runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "sam validate --lint failed:\n{text}"
    );
    assert!(text.contains("is a valid SAM Template"), "{text}");
}

#[tokio::test]
async fn local_resources_match_the_template() {
    let env = TestService::start().await;
    let deployed = &env.service.deployed;
    let template = Template::load(&Workspace::locate().unwrap().template_path()).unwrap();
    let clients = &env.service.clients;
    assert_eq!(deployed.tables.len(), template.tables.len());

    for table in &template.tables {
        let name = &deployed.tables[&table.logical_id];
        assert_eq!(
            *name,
            table.name_pattern.replace("${Stage}", &deployed.stage)
        );
        let described = clients
            .dynamodb
            .describe_table()
            .table_name(name)
            .send()
            .await
            .unwrap()
            .table
            .unwrap();
        let keys: Vec<(String, String)> = described
            .key_schema()
            .iter()
            .map(|k| {
                (
                    k.attribute_name().to_owned(),
                    k.key_type().as_str().to_owned(),
                )
            })
            .collect();
        assert_eq!(keys, table.key_schema, "{name} key schema");
        let mut attributes: Vec<(String, String)> = described
            .attribute_definitions()
            .iter()
            .map(|a| {
                (
                    a.attribute_name().to_owned(),
                    a.attribute_type().as_str().to_owned(),
                )
            })
            .collect();
        attributes.sort();
        let mut declared = table.attributes.clone();
        declared.sort();
        assert_eq!(attributes, declared, "{name} attributes");
        let indexes: BTreeMap<String, Vec<(String, String)>> = described
            .global_secondary_indexes()
            .iter()
            .map(|i| {
                (
                    i.index_name().unwrap_or_default().to_owned(),
                    i.key_schema()
                        .iter()
                        .map(|k| {
                            (
                                k.attribute_name().to_owned(),
                                k.key_type().as_str().to_owned(),
                            )
                        })
                        .collect(),
                )
            })
            .collect();
        let declared: BTreeMap<String, Vec<(String, String)>> = table
            .indexes
            .iter()
            .map(|i| (i.name.clone(), i.key_schema.clone()))
            .collect();
        assert_eq!(indexes, declared, "{name} indexes");
        let ttl = clients
            .dynamodb
            .describe_time_to_live()
            .table_name(name)
            .send()
            .await
            .unwrap()
            .time_to_live_description
            .and_then(|t| t.attribute_name);
        assert_eq!(ttl, table.ttl_attribute, "{name} TTL");
    }

    for queue in &template.queues {
        let url = &deployed.queues[&queue.logical_id];
        let attributes = clients
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap();
        for (name, value) in &queue.attributes {
            if name == "SqsManagedSseEnabled" {
                continue; // encryption at rest is AWS's; emulators do not report it
            }
            let actual = attributes
                .get(&QueueAttributeName::from(name.as_str()))
                .unwrap_or_else(|| panic!("{url} has no {name}"));
            assert_eq!(actual, value, "{url} {name}");
        }
        if let Some((dlq, max)) = &queue.redrive {
            let policy: serde_json::Value =
                serde_json::from_str(&attributes[&QueueAttributeName::RedrivePolicy]).unwrap();
            assert_eq!(policy["maxReceiveCount"].as_u64().unwrap(), u64::from(*max));
            let dlq_url = &deployed.queues[dlq];
            assert!(
                policy["deadLetterTargetArn"]
                    .as_str()
                    .unwrap()
                    .ends_with(dlq_url.rsplit('/').next().unwrap()),
                "{url} redrives to {dlq}"
            );
        }
    }
    assert_eq!(
        env.service.config.tables.devices, deployed.tables["DevicesTable"],
        "the functions' environment names the template's tables"
    );
}
