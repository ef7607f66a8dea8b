//! Every route and every error shape, in process, through `tower::ServiceExt::oneshot`.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::{Method, StatusCode, header};
use common::*;
use http_body_util::BodyExt;
use snapdump_server::egress::EgressProvider;
use snapdump_test_support::{Target, assert_running_untraced, find_subsequence};
use tower::ServiceExt;

/// Every route the router serves, as (method, path as in the document, a path to call).
const ROUTES: &[(&str, &str, &str)] = &[
    ("get", "/processes", "/processes"),
    ("get", "/process", "/process"),
    ("get", "/dump", "/dump"),
    ("get", "/operations", "/operations"),
    (
        "get",
        "/operations/{id}",
        "/operations/00000000-0000-0000-0000-000000000000",
    ),
    (
        "delete",
        "/operations/{id}",
        "/operations/00000000-0000-0000-0000-000000000000",
    ),
    ("get", "/collectionrules", "/collectionrules"),
    ("get", "/collectionrules/{name}", "/collectionrules/none"),
    ("get", "/info", "/info"),
    ("get", "/metrics", "/metrics"),
    ("get", "/openapi.json", "/openapi.json"),
    ("get", "/livez", "/livez"),
    ("get", "/readyz", "/readyz"),
];

fn method(name: &str) -> Method {
    name.to_ascii_uppercase().parse().unwrap()
}

#[tokio::test]
async fn health_routes_need_no_key() {
    let (state, _) = state_with_key(1, vec![]);
    let app = router(&state);
    for path in ["/livez", "/readyz"] {
        let reply = call(&app, Method::GET, path, None).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(&reply.body[..], b"Healthy");
    }
}

#[tokio::test]
async fn every_other_route_needs_the_key() {
    let (state, key) = state_with_key(1, vec![]);
    let app = router(&state);
    let doc = get(&app, "/openapi.json", &key).await.json();
    for (verb, documented, path) in ROUTES {
        if documented.ends_with("z") {
            continue;
        }
        for presented in [None, Some("wrong"), Some(&key[..key.len() - 1])] {
            let reply = call(&app, method(verb), path, presented).await;
            reply.assert_problem(StatusCode::UNAUTHORIZED, "unauthorized");
            assert_eq!(
                reply.headers[header::WWW_AUTHENTICATE],
                "Bearer realm=\"snapdump\""
            );
            assert_documented(&doc, documented, verb, &reply);
        }
        // The right key in another scheme is still refused.
        let request = axum::http::Request::builder()
            .method(method(verb))
            .uri(*path)
            .header(header::AUTHORIZATION, format!("Basic {key}"))
            .body(axum::body::Body::empty())
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn no_auth_lets_everyone_in() {
    let state = snapdump_server::AppState::new(snapdump_server::auth::Auth::Disabled, vec![], 1);
    let app = router(&state);
    let reply = call(&app, Method::GET, "/info", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["authentication"], "None");
}

#[tokio::test]
async fn every_route_is_served_and_documented() {
    let (state, key) = state_with_key(1, vec![]);
    let app = router(&state);
    let doc = get(&app, "/openapi.json", &key).await.json();
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().unwrap();
    for (verb, documented, path) in ROUTES {
        assert!(
            paths.get(*documented).and_then(|p| p.get(*verb)).is_some(),
            "{verb} {documented} is not in /openapi.json"
        );
        let reply = call(&app, method(verb), path, Some(&key)).await;
        assert_ne!(
            reply.body.as_ref(),
            b"",
            "{verb} {path}: empty body (status {})",
            reply.status
        );
        if reply.status == StatusCode::NOT_FOUND {
            // Only the operation and rule routes may say 404, and only about those.
            let code = reply.json()["code"].clone();
            assert!(
                code == "no_such_operation" || code == "no_such_collection_rule",
                "{verb} {path}: {code}"
            );
        }
        if reply.status.is_success() || reply.status.is_client_error() {
            assert_documented(&doc, documented, verb, &reply);
        }
    }
    let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(
        documented,
        ROUTES.len(),
        "the document has routes the router lacks"
    );
}

#[tokio::test]
async fn unknown_routes_are_404_problems() {
    let (state, key) = state_with_key(1, vec![]);
    let app = router(&state);
    get(&app, "/nothing/here", &key)
        .await
        .assert_problem(StatusCode::NOT_FOUND, "no_such_route");
    call(&app, Method::GET, "/nothing", None)
        .await
        .assert_problem(StatusCode::NOT_FOUND, "no_such_route");
    let reply = call(&app, Method::POST, "/dump", Some(&key)).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn processes_list_the_target() {
    let target = Target::spawn(&[]);
    let (state, key) = state_with_key(1, vec![]);
    let app = router(&state);
    let doc = get(&app, "/openapi.json", &key).await.json();
    let reply = get(&app, "/processes", &key).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_documented(&doc, "/processes", "get", &reply);
    let list = reply.json();
    let entry = list
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == target.pid())
        .expect("the target is listed");
    assert_eq!(entry["name"], "snapdump-test-t");
    assert_eq!(entry["exeName"], "snapdump-test-target");
    assert_eq!(entry["dumpable"], true);
    // Not .NET: no runtime instance cookie.
    assert_eq!(entry["uid"], serde_json::Value::Null);
    let me = list
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == std::process::id())
        .expect("the server is listed");
    assert_eq!(me["dumpable"], false);
    assert_eq!(me["notDumpableReason"], "snapdump itself");
    get(&app, "/processes?pid=1", &key)
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "unknown_parameter");
}

#[tokio::test]
async fn process_by_pid_or_name_and_its_errors() {
    let target = Target::spawn(&[]);
    let (state, key) = state_with_key(1, vec![]);
    let app = router(&state);
    let doc = get(&app, "/openapi.json", &key).await.json();

    let reply = get(&app, &format!("/process?pid={}", target.pid()), &key).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_documented(&doc, "/process", "get", &reply);
    let info = reply.json();
    assert_eq!(info["pid"], target.pid());
    assert_eq!(info["operatingSystem"], "linux");
    let by_name = get(&app, "/process?name=snapdump-test-target", &key).await;
    if by_name.status == StatusCode::OK {
        assert_eq!(by_name.json()["pid"], target.pid());
    } else {
        // Another test's target runs too: the name is ambiguous, and says so.
        by_name.assert_problem(StatusCode::BAD_REQUEST, "ambiguous_name");
    }

    for (query, code) in [
        ("pid=abc", "bad_pid"),
        ("pid=-4", "bad_pid"),
        ("pid=2147483646", "no_such_process"),
        ("name=no-such-process-anywhere", "no_process_named"),
        ("pid=1&name=x", "ambiguous_selector"),
        ("uid=5", "bad_uid"),
        ("uid=0011223-4455-6677-8899-aabbccddeeff", "bad_uid"),
        (
            "uid=00112233-4455-6677-8899-aabbccddeeff",
            "no_such_process",
        ),
        (
            "pid=1&uid=00112233-4455-6677-8899-aabbccddeeff",
            "ambiguous_selector",
        ),
        ("bogus=1", "unknown_parameter"),
    ] {
        let reply = get(&app, &format!("/process?{query}"), &key).await;
        reply.assert_problem(StatusCode::BAD_REQUEST, code);
        assert_documented(&doc, "/process", "get", &reply);
    }
    // Several processes run (the target, the test runner's parents): none is the default.
    get(&app, "/process", &key)
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "no_default_process");
}

#[tokio::test]
async fn dump_input_errors_are_400_problems() {
    let target = Target::spawn(&[]);
    let pid = target.pid();
    let (state, key) = state_with_key(1, vec![]);
    let app = router(&state);
    let doc = get(&app, "/openapi.json", &key).await.json();
    let me = std::process::id();
    for (query, code) in [
        (format!("pid={pid}&type=Huge"), "bad_type"),
        (format!("pid={pid}&format=pdf"), "bad_format"),
        ("pid=abc".to_owned(), "bad_pid"),
        ("pid=2147483646".to_owned(), "no_such_process"),
        (
            "name=no-such-process-anywhere".to_owned(),
            "no_process_named",
        ),
        (
            format!("pid={pid}&egressProvider=nowhere"),
            "unknown_egress_provider",
        ),
        (format!("pid={pid}&tags=caf%C3%A9"), "bad_tags"),
        (format!("pid={pid}&bogus=1"), "unknown_parameter"),
        ("uid=not-a-guid".to_owned(), "bad_uid"),
        (
            "uid=%7B00112233-4455-6677-8899-AABBCCDDEEFF%7D".to_owned(),
            "no_such_process",
        ),
        (
            "name=x&uid=00112233-4455-6677-8899-aabbccddeeff".to_owned(),
            "ambiguous_selector",
        ),
        (format!("pid={me}"), "self_dump"),
        (String::new(), "no_default_process"),
    ] {
        let reply = get(&app, &format!("/dump?{query}"), &key).await;
        reply.assert_problem(StatusCode::BAD_REQUEST, code);
        assert_documented(&doc, "/dump", "get", &reply);
    }
    assert!(
        get(&app, "/operations", &key)
            .await
            .json()
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_running_untraced(pid);
}

#[tokio::test]
async fn dump_streams_an_elf_core_and_records_the_operation() {
    let target = Target::spawn(&[]);
    let (state, key) = state_with_key(1, vec![]);
    let app = router(&state);
    let doc = get(&app, "/openapi.json", &key).await.json();
    let reply = get(
        &app,
        &format!("/dump?pid={}&type=Mini&tags=first,ci", target.pid()),
        &key,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.content_type(), "application/octet-stream");
    let disposition = reply.headers[header::CONTENT_DISPOSITION].to_str().unwrap();
    assert!(
        disposition.starts_with(&format!(
            "attachment; filename=\"snapdump-test-t_{}_",
            target.pid()
        )) && disposition.ends_with(".core\""),
        "{disposition}"
    );
    assert_elf_core(&reply.body);
    assert_running_untraced(target.pid());

    let location = reply.location();
    assert!(location.starts_with("/operations/"));
    let op = wait_finished(&app, &location, &key, Duration::from_secs(10)).await;
    let op_reply = get(&app, &location, &key).await;
    assert_documented(&doc, "/operations/{id}", "get", &op_reply);
    assert_eq!(op["status"], "Succeeded", "{op}");
    assert_eq!(op["process"]["pid"], target.pid());
    assert_eq!(op["type"], "Mini");
    assert_eq!(op["format"], "elf");
    assert_eq!(op["egressProviderName"], serde_json::Value::Null);
    assert_eq!(op["tags"], serde_json::json!(["first", "ci"]));
    assert_eq!(op["resourceBytes"], reply.body.len());
    assert_eq!(op["resourceSha256"], sha256_hex(&reply.body));
    assert_eq!(op["isStoppable"], false);

    let metrics = get(&app, "/metrics", &key).await;
    assert!(metrics.content_type().starts_with("text/plain"));
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(
        text.contains("snapdump_dumps_total{status=\"succeeded\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains(&format!("snapdump_dump_bytes_total {}\n", reply.body.len())),
        "{text}"
    );
}

#[tokio::test]
async fn dump_as_minidump() {
    let target = Target::spawn(&[]);
    let (state, key) = state_with_key(1, vec![]);
    let app = router(&state);
    let reply = get(
        &app,
        &format!("/dump?pid={}&type=Triage&format=minidump", target.pid()),
        &key,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(&reply.body[..4], b"MDMP");
    let disposition = reply.headers[header::CONTENT_DISPOSITION].to_str().unwrap();
    assert!(disposition.ends_with(".dmp\""), "{disposition}");
    let op = get(&app, &reply.location(), &key).await.json();
    assert_eq!(op["type"], "Triage");
    assert_eq!(op["format"], "minidump");
}

#[tokio::test]
async fn triage_dumps_hold_no_arguments_or_environment() {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let tag = format!("{}x{nanos:08x}", std::process::id());
    let (env_secret, arg_secret) = (format!("hunter2-{tag}"), format!("argsecret-{tag}"));
    let target = Target::spawn_with_env(
        &["--label", &arg_secret],
        &[("SNAPDUMP_TEST_SECRET", &env_secret)],
    );
    let (state, key) = state_with_key(1, vec![]);
    let app = router(&state);
    for (dump_type, format, kept) in [
        ("Mini", "elf", true),
        ("Triage", "elf", false),
        ("Triage", "minidump", false),
    ] {
        let reply = get(
            &app,
            &format!(
                "/dump?pid={}&type={dump_type}&format={format}",
                target.pid()
            ),
            &key,
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{dump_type} {format}");
        for secret in [&env_secret, &arg_secret] {
            assert_eq!(
                find_subsequence(&reply.body, secret.as_bytes()).is_some(),
                kept,
                "{dump_type} {format}: {secret} in the dump should be {kept}"
            );
        }
        let op = wait_finished(&app, &reply.location(), &key, Duration::from_secs(10)).await;
        assert_eq!(op["type"], dump_type);
    }
    assert_running_untraced(target.pid());
}

#[tokio::test]
async fn operations_filter_by_tags_and_unknown_ones_are_404() {
    let target = Target::spawn(&[]);
    let (state, key) = state_with_key(1, vec![]);
    let app = router(&state);
    let doc = get(&app, "/openapi.json", &key).await.json();
    for tags in ["a,b", "b"] {
        let reply = get(
            &app,
            &format!("/dump?pid={}&type=Mini&tags={tags}", target.pid()),
            &key,
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
        wait_finished(&app, &reply.location(), &key, Duration::from_secs(10)).await;
    }
    let all = get(&app, "/operations", &key).await;
    assert_documented(&doc, "/operations", "get", &all);
    assert_eq!(all.json().as_array().unwrap().len(), 2);
    let a = get(&app, "/operations?tags=a", &key).await.json();
    assert_eq!(a.as_array().unwrap().len(), 1);
    assert_eq!(a[0]["tags"], serde_json::json!(["a", "b"]));
    assert_eq!(
        get(&app, "/operations?tags=b", &key)
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        get(&app, "/operations?tags=a,c", &key)
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        0
    );
    get(&app, "/operations?tags=%00", &key)
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "bad_tags");

    let finished = a[0]["operationId"].as_str().unwrap().to_owned();
    let reply = call(
        &app,
        Method::DELETE,
        &format!("/operations/{finished}"),
        Some(&key),
    )
    .await;
    reply.assert_problem(StatusCode::BAD_REQUEST, "operation_not_running");
    assert_documented(&doc, "/operations/{id}", "delete", &reply);
    for path in [
        "/operations/not-a-uuid".to_owned(),
        format!("/operations/{}", uuid::Uuid::new_v4()),
    ] {
        let reply = get(&app, &path, &key).await;
        reply.assert_problem(StatusCode::NOT_FOUND, "no_such_operation");
        assert_documented(&doc, "/operations/{id}", "get", &reply);
        call(&app, Method::DELETE, &path, Some(&key))
            .await
            .assert_problem(StatusCode::NOT_FOUND, "no_such_operation");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_limit_dumps_get_429_and_a_client_that_hangs_up_cancels() {
    // 64 MiB of touched memory: far more than the channel and buffers hold, so the first dump
    // cannot finish while its body is not read.
    let target = Target::spawn(&["--touch-mb", "64"]);
    let (state, key) = state_with_key(1, vec![]);
    let app = router(&state);
    let doc = get(&app, "/openapi.json", &key).await.json();
    let uri = format!("/dump?pid={}&type=Full", target.pid());
    let first = app
        .clone()
        .oneshot(request(Method::GET, &uri, Some(&key)))
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let location = first.headers()[header::LOCATION]
        .to_str()
        .unwrap()
        .to_owned();

    let second = get(&app, &uri, &key).await;
    second.assert_problem(StatusCode::TOO_MANY_REQUESTS, "too_many_dumps");
    assert_documented(&doc, "/dump", "get", &second);
    let info = get(&app, "/info", &key).await.json();
    assert_eq!(info["dumpsInProgress"], 1);
    assert_eq!(get(&app, &location, &key).await.json()["status"], "Running");

    // Read a little, then hang up: the dump stops and the target runs on.
    let mut body = first.into_body();
    let frame = body.frame().await.unwrap().unwrap();
    assert!(frame.data_ref().is_some_and(|d| d.starts_with(b"\x7fELF")));
    drop(body);
    let op = wait_finished(&app, &location, &key, Duration::from_secs(30)).await;
    assert_eq!(op["status"], "Cancelled", "{op}");
    assert_eq!(op["error"]["code"], "client_disconnected", "{op}");
    assert_running_untraced(target.pid());

    // The slot is free again.
    let third = get(&app, &format!("/dump?pid={}&type=Mini", target.pid()), &key).await;
    assert_eq!(third.status, StatusCode::OK);
    let metrics = String::from_utf8_lossy(&get(&app, "/metrics", &key).await.body).into_owned();
    assert!(
        metrics.contains("snapdump_dumps_rejected_total 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("snapdump_dumps_total{status=\"cancelled\"} 1\n"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_higher_limit_admits_concurrent_dumps() {
    let target = Target::spawn(&["--touch-mb", "64"]);
    let (state, key) = state_with_key(2, vec![]);
    let app = router(&state);
    let uri = format!("/dump?pid={}&type=Full", target.pid());
    let first = app
        .clone()
        .oneshot(request(Method::GET, &uri, Some(&key)))
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    // The first holds the target stopped; a second dump of another process is admitted.
    let other = Target::spawn(&[]);
    let second = get(&app, &format!("/dump?pid={}&type=Mini", other.pid()), &key).await;
    assert_eq!(second.status, StatusCode::OK);
    let body = first.into_body().collect().await.unwrap().to_bytes();
    assert_elf_core(&body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_to_a_folder_gives_202_then_the_file() {
    let target = Target::spawn(&[]);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let provider = EgressProvider::new("local", &url, &BTreeMap::new()).unwrap();
    let (state, key) = state_with_key(1, vec![provider]);
    let app = router(&state);
    let doc = get(&app, "/openapi.json", &key).await.json();

    let reply = get(
        &app,
        &format!("/dump?pid={}&egressProvider=local&tags=x", target.pid()),
        &key,
    )
    .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    assert!(reply.body.is_empty());
    assert_documented(&doc, "/dump", "get", &reply);
    let op = wait_finished(&app, &reply.location(), &key, Duration::from_secs(60)).await;
    assert_eq!(op["status"], "Succeeded", "{op}");
    assert_eq!(op["egressProviderName"], "local");
    let path = std::path::PathBuf::from(op["resourceLocation"].as_str().unwrap());
    assert_eq!(path.parent().unwrap(), dir.path());
    let bytes = std::fs::read(&path).unwrap();
    assert_elf_core(&bytes);
    assert_eq!(op["resourceBytes"], bytes.len());
    assert_eq!(op["resourceSha256"], sha256_hex(&bytes));
    gdb_sees_threads(&target.exe_path(), &path, &target.ready().tids);

    let mut sidecar = path.clone().into_os_string();
    sidecar.push(".metadata.json");
    let metadata: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&sidecar).unwrap()).unwrap();
    assert_eq!(metadata["pid"], target.pid().to_string());
    assert_eq!(metadata["process_name"], "snapdump-test-t");
    assert_eq!(metadata["mode"], "heap");
    assert_eq!(metadata["format"], "elf");
    assert_eq!(metadata["tags"], "x");
    assert_eq!(metadata["operation_id"], op["operationId"]);
    // Nothing else: no staging file left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    assert_running_untraced(target.pid());

    let info = get(&app, "/info", &key).await;
    assert_documented(&doc, "/info", "get", &info);
    assert_eq!(
        info.json()["egressProviders"],
        serde_json::json!([{"name": "local", "type": "file"}])
    );
}

#[tokio::test]
async fn collection_rules_are_listed_and_documented() {
    use snapdump_server::config::Config;
    use snapdump_server::rules::Rule;
    let config = Config::parse(
        r#"
        [collection_rules.hourly]
        process = { name = "no-such-process-anywhere" }
        triggers = { every = "1h" }
        type = "Mini"
        egress = "local"
        "#,
        std::path::Path::new("test.toml"),
    )
    .unwrap();
    let rule = Rule::new("hourly", &config.collection_rules["hourly"], |n| {
        n == "local"
    })
    .unwrap();
    let (state, key) = state_with_key(1, vec![]);
    let app = router(&state.with_rules(vec![rule]));
    let doc = get(&app, "/openapi.json", &key).await.json();

    let list = get(&app, "/collectionrules", &key).await;
    assert_eq!(list.status, StatusCode::OK);
    assert_documented(&doc, "/collectionrules", "get", &list);
    let rules = list.json();
    assert_eq!(rules.as_array().unwrap().len(), 1);
    let one = get(&app, "/collectionrules/hourly", &key).await;
    assert_documented(&doc, "/collectionrules/{name}", "get", &one);
    let one = one.json();
    assert_eq!(one, rules[0]);
    // Not started (only `Server::run` starts rules).
    assert_eq!(one["state"], "Running");
    assert_eq!(one["triggers"], "every 3600 s");
    assert_eq!(one["type"], "Mini");
    assert_eq!(one["egressProviderName"], "local");
    assert_eq!(
        (one["dumpLimit"].as_u64(), one["dumpsTaken"].as_u64()),
        (Some(1), Some(0))
    );

    let missing = get(&app, "/collectionrules/daily", &key).await;
    missing.assert_problem(StatusCode::NOT_FOUND, "no_such_collection_rule");
    assert_documented(&doc, "/collectionrules/{name}", "get", &missing);
    let bad = get(&app, "/collectionrules?name=x", &key).await;
    bad.assert_problem(StatusCode::BAD_REQUEST, "unknown_parameter");
    assert_documented(&doc, "/collectionrules", "get", &bad);
}
