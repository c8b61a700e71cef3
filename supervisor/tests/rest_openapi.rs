//! `supervisor/openapi.json` against the REST face as served: the document is the one
//! `GET /v1/openapi.json` serves; its paths and methods are exactly the routes
//! (`rest::ROUTES`, which the router is checked against in its unit tests); each
//! documented route answers something other than 404/405 over a real socket, each
//! method it does not document is 405; and real answers (success and errors, event
//! frames) validate against the document's response schemas (JSON Schema 2020-12, as
//! OpenAPI 3.1 says).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rest_support;
mod rpc_support;

use std::collections::BTreeSet;
use std::time::Duration;

use hero_supervisor::job::ScriptType;
use hero_supervisor::rpc::RpcConfig;
use hero_supervisor::rpc::rest::{OPENAPI_JSON, ROUTES};
use hero_supervisor::store::Completion;
use rest_support::{Answer, events, get, post, request};
use rpc_support::TestServer;
use serde_json::{Value, json};

const TOKEN: &str = "openapi-token";

fn doc() -> Value {
    serde_json::from_str(OPENAPI_JSON).expect("openapi.json is JSON")
}

/// A validator of `schema` (a part of `doc`), with `doc`'s components as its `$ref`s
/// resolve them; formats (date-time, uuid) are checked.
fn validator(doc: &Value, schema: &Value) -> jsonschema::Validator {
    let root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": doc["components"],
        "allOf": [schema],
    });
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&root)
        .unwrap_or_else(|e| panic!("schema {schema}: {e}"))
}

/// Panics with every violation of `schema` by `value`.
#[track_caller]
fn conforms(doc: &Value, what: &str, schema: &Value, value: &Value) {
    let errors: Vec<String> = validator(doc, schema)
        .iter_errors(value)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{what}: {value}\n{}", errors.join("\n"));
}

/// Checks `answer` of `method path` (the document's template) against the documented
/// response of its status.
#[track_caller]
fn documented(doc: &Value, template: &str, method: &str, answer: &Answer) {
    let op = &doc["paths"][template][method.to_lowercase()];
    let response = &op["responses"][answer.status.to_string()];
    assert!(
        response.is_object(),
        "{method} {template} answered {}, which is not documented: {}",
        answer.status,
        answer.text
    );
    let schema = &response["content"]["application/json"]["schema"];
    if schema.is_object() {
        conforms(
            doc,
            &format!("{method} {template} {}", answer.status),
            schema,
            &answer.json(),
        );
    }
}

#[test]
fn the_document_is_openapi_3_1_and_lists_exactly_the_routes() {
    let doc = doc();
    assert_eq!(doc["openapi"], "3.1.0");
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| (path.clone(), m.to_uppercase()))
        })
        .collect();
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .flat_map(|(path, methods)| methods.iter().map(|m| (path.to_string(), m.to_string())))
        .collect();
    assert_eq!(documented, served);
    // Every schema compiles, with every $ref resolved.
    for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
        let _ = validator(&doc, schema);
        assert!(!name.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_as_documented() {
    let doc = doc();
    let config = RpcConfig {
        auth_token: Some(TOKEN.to_owned()),
        ..RpcConfig::default()
    };
    let server = TestServer::with_config(config).await;
    let addr = server.addr;
    let t = Some(TOKEN);

    // The served document is the committed one.
    let served = get(addr, "/v1/openapi.json", t).await;
    assert_eq!(served.status, 200);
    assert_eq!(served.json(), doc);

    // A job with logs, finished.
    let created = post(
        addr,
        "/v1/jobs",
        t,
        json!({"script": "1", "script_type": "SAL"}),
    )
    .await;
    documented(&doc, "/v1/jobs", "POST", &created);
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let job = server
        .store
        .claim(ScriptType::Sal, 1, "t", Duration::from_secs(60))
        .await
        .unwrap()
        .remove(0)
        .into_job()
        .unwrap();
    let lines: Vec<String> = (0..5).map(|i| format!("line {i}")).collect();
    server.store.append_logs(job.id, &lines).await.unwrap();

    // Every documented route and method answers, neither 404 nor 405; every other
    // method of its path is 405.
    for (template, methods) in ROUTES {
        let path = template.replace("{id}", &id);
        for method in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
            let body = (method != "GET").then(|| json!({}).to_string());
            let answer = request(addr, method, &path, t, body).await;
            if methods.contains(&method) {
                assert!(
                    ![404, 405].contains(&answer.status),
                    "{method} {path}: {} {}",
                    answer.status,
                    answer.text
                );
                documented(&doc, template, method, &answer);
            } else {
                assert_eq!(answer.status, 405, "{method} {path}: {}", answer.text);
            }
        }
    }

    // Answers of each route, and its errors, against their schemas.
    let checks = [
        ("/v1/runtime", "GET", get(addr, "/v1/runtime", t).await),
        ("/v1/runtime", "GET", get(addr, "/v1/runtime", None).await),
        ("/v1/jobs", "GET", get(addr, "/v1/jobs?limit=1", t).await),
        ("/v1/jobs", "GET", get(addr, "/v1/jobs?limit=0", t).await),
        (
            "/v1/jobs/{id}",
            "GET",
            get(addr, &format!("/v1/jobs/{id}"), t).await,
        ),
        ("/v1/jobs/{id}", "GET", get(addr, "/v1/jobs/nope", t).await),
        (
            "/v1/jobs/{id}/transcript",
            "GET",
            get(
                addr,
                &format!("/v1/jobs/{id}/transcript?start=1&limit=2"),
                t,
            )
            .await,
        ),
        (
            "/v1/jobs/{id}/transcript",
            "GET",
            get(
                addr,
                &format!("/v1/jobs/{}/transcript", hero_supervisor::job::JobId::new()),
                t,
            )
            .await,
        ),
        (
            "/v1/jobs",
            "POST",
            post(
                addr,
                "/v1/jobs",
                t,
                json!({"script": "1", "script_type": "SAL", "start": false}),
            )
            .await,
        ),
        (
            "/v1/jobs",
            "POST",
            post(
                addr,
                "/v1/jobs",
                t,
                json!({"script": "1", "script_type": "nope"}),
            )
            .await,
        ),
    ];
    for (template, method, answer) in &checks {
        documented(&doc, template, method, answer);
    }

    // The event frames against `EventFrame`.
    let frame_schema = &doc["paths"]["/v1/jobs/{id}/events/ws"]["get"]["x-websocket-frames"];
    let mut ws = events(addr, &format!("/v1/jobs/{id}/events/ws?cursor=1"), t)
        .await
        .unwrap();
    let mut seen = BTreeSet::new();
    let mut finished = false;
    while let Some(frame) = ws.next().await {
        conforms(&doc, "event frame", frame_schema, &frame);
        seen.insert(frame["type"].as_str().unwrap().to_owned());
        if frame["type"] == "status" && !finished {
            finished = true;
            server
                .store
                .complete_one(Completion::finish(job.id, job.attempt, "1"))
                .await
                .unwrap();
        }
    }
    assert_eq!(
        seen,
        ["end", "log", "snapshot", "status"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    // The stop answers of the routes after the job ended.
    let stopped = post(
        addr,
        &format!("/v1/jobs/{id}/stop"),
        t,
        json!({"reason": "x"}),
    )
    .await;
    documented(&doc, "/v1/jobs/{id}/stop", "POST", &stopped);
}
