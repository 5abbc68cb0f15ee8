//! Every endpoint answers with its typed shape, and Apple's validation errors come back typed.

use adesync_apple::{
    AppleConfig, AppleError, DeviceStatus, MAX_DEVICES_PER_REQUEST, Profile, ProfileStatus, Route,
};
use reqwest::Method;
use serde_json::json;

use crate::support::start;

fn profile(name: &str) -> Profile {
    Profile {
        profile_name: name.to_owned(),
        url: Some("https://mdm.example.com/enroll".to_owned()),
        is_supervised: Some(true),
        is_mandatory: Some(true),
        department: Some("IT".to_owned()),
        ..Profile::default()
    }
}

#[tokio::test]
async fn account_names_the_server_and_sizes_pages() {
    let sim = start(0).await;
    sim.configure(json!({ "limit_maximum": 750 })).await;
    let session = sim.session();

    let account = session.account().await.expect("the account is readable");
    assert_eq!(account.server_uuid, sim.server_uuid);
    assert_eq!(account.server_name, "tests");
    assert!(account.org_name.is_some());

    assert_eq!(
        session.page_limit_for(Route::FetchDevices).await.ok(),
        Some(750)
    );
    assert_eq!(
        session.page_limit_for(Route::SyncDevices).await.ok(),
        Some(750)
    );
    // Routes without an advertised limit fall back to Apple's documented maximum.
    assert_eq!(
        session.page_limit_for(Route::DeviceDetails).await.ok(),
        Some(adesync_apple::FALLBACK_PAGE_LIMIT)
    );
    assert_eq!(
        sim.requests("/account").await,
        1,
        "the account is read once"
    );
}

#[tokio::test]
async fn pages_default_to_the_advertised_maximum() {
    let sim = start(5).await;
    sim.configure(json!({ "limit_maximum": 2 })).await;
    let session = sim.session();

    let page = session
        .fetch_devices(None, None)
        .await
        .expect("the first fetch page arrives");
    assert_eq!(page.devices.len(), 2);
    assert!(page.more_to_follow);
    assert!(page.fetched_until.is_some());
}

#[tokio::test]
async fn fetch_then_sync_sees_a_new_device() {
    let sim = start(3).await;
    let session = sim.session();

    let page = session
        .fetch_devices(None, Some(100))
        .await
        .expect("fetch answers");
    assert_eq!(page.devices.len(), 3);
    assert!(!page.more_to_follow);
    assert!(page.devices.iter().all(|device| device.op_type.is_none()));

    let added = sim.add_devices(1).await;
    let changes = session
        .sync_devices(&page.cursor, Some(100))
        .await
        .expect("sync answers");
    let serials: Vec<&str> = changes
        .devices
        .iter()
        .map(|device| device.serial_number.as_str())
        .collect();
    assert_eq!(serials, [added[0].as_str()]);
    assert_eq!(
        changes.devices[0].op_type,
        Some(adesync_apple::OpType::Added)
    );
    assert!(changes.devices[0].op_date.is_some());
}

#[tokio::test]
async fn profiles_are_defined_read_assigned_removed_and_devices_disowned() {
    let sim = start(4).await;
    let session = sim.session();
    let serials: Vec<String> = sim.serials().await.into_iter().collect();

    let details = session
        .device_details(&serials)
        .await
        .expect("device details answer");
    assert_eq!(details.devices.len(), serials.len());
    for serial in &serials {
        let device = &details.devices[serial];
        assert_eq!(&device.serial_number, serial);
        assert_eq!(device.response_status.as_deref(), Some("SUCCESS"));
        assert!(device.model.is_some());
    }

    let mut staff = profile("Staff");
    staff.devices = vec![serials[0].clone()];
    let defined = session
        .define_profile(&staff)
        .await
        .expect("a valid profile is defined");
    assert_eq!(defined.devices[&serials[0]], DeviceStatus::Success);

    let read = session
        .get_profile(&defined.profile_uuid)
        .await
        .expect("the profile reads back");
    assert_eq!(read.profile_name, "Staff");
    assert_eq!(read.url, staff.url);
    assert_eq!(read.department.as_deref(), Some("IT"));

    let pair = [serials[1].clone(), serials[2].clone()];
    let assigned = session
        .assign_profile(&defined.profile_uuid, &pair)
        .await
        .expect("assignment answers");
    assert_eq!(
        assigned.profile_uuid.as_deref(),
        Some(defined.profile_uuid.as_str())
    );
    assert_eq!(assigned.devices[&pair[0]], DeviceStatus::Success);
    assert_eq!(assigned.devices[&pair[1]], DeviceStatus::Success);
    assert_eq!(assigned.retry_after_seconds, None);

    // Apple's cooldown for one device: THROTTLED with retry_after_seconds (protocol v10).
    let outcome = format!(
        "/_sim/servers/{}/devices/{}/assign-outcome",
        sim.server_uuid, pair[1]
    );
    sim.control(
        Method::POST,
        &outcome,
        json!({ "status": "THROTTLED", "retry_after_seconds": 600 }),
    )
    .await;
    let throttled = session
        .assign_profile(&defined.profile_uuid, &pair)
        .await
        .expect("assignment answers");
    assert_eq!(throttled.devices[&pair[0]], DeviceStatus::Success);
    assert_eq!(throttled.devices[&pair[1]], DeviceStatus::Throttled);
    assert_eq!(throttled.retry_after_seconds, Some(600));

    let details = session
        .device_details(&pair[..1])
        .await
        .expect("details answer");
    let device = &details.devices[&pair[0]];
    assert_eq!(
        device.profile_uuid.as_deref(),
        Some(defined.profile_uuid.as_str())
    );
    assert_eq!(device.profile_status, Some(ProfileStatus::Assigned));

    let removed = session
        .remove_profile(&pair[..1])
        .await
        .expect("removal answers");
    assert_eq!(removed.devices[&pair[0]], DeviceStatus::Success);

    let disowned = session
        .disown_devices(&serials[3..])
        .await
        .expect("disown answers");
    assert_eq!(disowned.devices[&serials[3]], DeviceStatus::Success);
    assert!(!sim.serials().await.contains(&serials[3]));
}

#[tokio::test]
async fn apple_validation_errors_come_back_typed() {
    let sim = start(1).await;
    let session = sim.session();

    let mut unsupervised = profile("Locked");
    unsupervised.is_supervised = Some(false);
    unsupervised.is_mdm_removable = Some(false);
    let error = session.define_profile(&unsupervised).await.unwrap_err();
    assert!(
        matches!(&error, AppleError::BadRequest { code } if code == "FLAGS_INVALID"),
        "{error:?}"
    );

    let error = session
        .define_profile(&profile(&"n".repeat(126)))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, AppleError::BadRequest { code } if code == "CONFIG_NAME_INVALID"),
        "{error:?}"
    );

    let defined = session
        .define_profile(&profile("Staff"))
        .await
        .expect("a valid profile is defined");
    let error = session
        .assign_profile(&defined.profile_uuid, &[])
        .await
        .unwrap_err();
    assert!(
        matches!(&error, AppleError::BadRequest { code } if code == "DEVICE_ID_REQUIRED"),
        "{error:?}"
    );

    let serials: Vec<String> = sim.serials().await.into_iter().collect();
    let error = session
        .assign_profile("0000UNKNOWNPROFILE", &serials)
        .await
        .unwrap_err();
    assert!(matches!(error, AppleError::ProfileNotFound), "{error:?}");
    let error = session.get_profile("0000UNKNOWNPROFILE").await.unwrap_err();
    assert!(matches!(error, AppleError::ProfileNotFound), "{error:?}");

    let too_many: Vec<String> = (0..=MAX_DEVICES_PER_REQUEST)
        .map(|n| format!("SERIAL{n}"))
        .collect();
    let before = sim.requests("/devices/disown").await;
    let error = session.disown_devices(&too_many).await.unwrap_err();
    assert!(
        matches!(error, AppleError::TooManyDevices { .. }),
        "{error:?}"
    );
    assert_eq!(sim.requests("/devices/disown").await, before, "never sent");

    sim.fault(json!({ "route": "/account", "status": 403, "body": "ACCESS_DENIED" }))
        .await;
    let error = session.account().await.unwrap_err();
    assert!(matches!(error, AppleError::AccessDenied), "{error:?}");
    assert!(error.is_auth() && !error.is_retryable());
}

#[tokio::test]
async fn oversized_answers_are_cut_off() {
    let sim = start(50).await;
    let session = sim.session_with(AppleConfig {
        max_response_bytes: 2048,
        ..sim.config()
    });
    let error = session.fetch_devices(None, Some(50)).await.unwrap_err();
    assert!(
        matches!(error, AppleError::ResponseTooLarge { limit: 2048 }),
        "{error:?}"
    );
}
