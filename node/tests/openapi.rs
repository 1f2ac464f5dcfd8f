//! The OpenAPI document against the daemon, both ways:
//! - every documented path and method answers a live daemon with a
//!   documented status, and a JSON answer validates against the documented
//!   schema (with the token, and without it where one is required);
//! - every route the daemon's code can serve or call is documented: no
//!   route is registered outside `utoipa_axum::routes!` (which takes path and
//!   method from the same annotation the document is built from), and every
//!   API path written in the daemon's source (CLI, demo, docs in errors)
//!   matches a documented one.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use chorus_node::daemon;
use chorus_node::demo::local_config;

const TOKEN: &str = "openapi-test-token";

/// One request of the walk: the documented operation it exercises, and
/// what it sends.
struct Case {
    method: Method,
    /// The documented path template (`/v1/rooms/{room}`).
    template: &'static str,
    /// The concrete path and query.
    path: String,
    body: Option<Body>,
}

enum Body {
    Json(Value),
    Bytes(Vec<u8>),
}

fn case(method: Method, template: &'static str, path: &str, body: Option<Value>) -> Case {
    Case {
        method,
        template,
        path: path.to_string(),
        body: body.map(Body::Json),
    }
}

/// The document's operations as `(METHOD, template)`.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            if ["get", "put", "post", "delete", "patch", "head", "options"]
                .contains(&method.as_str())
            {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

/// A validator for `schema`, resolving `#/components/...` against the
/// document.
fn validator(doc: &Value, schema: &Value) -> jsonschema::Validator {
    let mut root = schema.clone();
    if let Some(object) = root.as_object_mut() {
        object.insert("components".into(), doc["components"].clone());
    } else {
        root = json!({ "allOf": [schema], "components": doc["components"] });
    }
    jsonschema::draft202012::new(&root).expect("the document's schema compiles")
}

/// Sends `case` and checks the answer against the document; returns the
/// body.
async fn check(
    http: &reqwest::Client,
    base: &str,
    doc: &Value,
    case: &Case,
    token: bool,
) -> (StatusCode, Vec<u8>) {
    let mut request = http.request(case.method.clone(), format!("{base}{}", case.path));
    if token {
        request = request.bearer_auth(TOKEN);
    }
    request = match &case.body {
        Some(Body::Json(value)) => request.json(value),
        Some(Body::Bytes(bytes)) => request
            .header("content-type", "application/octet-stream")
            .body(bytes.clone()),
        None => request,
    };
    let what = format!("{} {} (token: {token})", case.method, case.path);
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let operation = &doc["paths"][case.template][case.method.as_str().to_lowercase()];
    let documented = &operation["responses"][status.as_str()];
    assert!(
        documented.is_object(),
        "{what}: answered {status}, which the document does not list for it"
    );
    // An endless stream: the status and headers are the answer.
    if content_type.starts_with("text/event-stream") {
        assert!(
            documented["content"]["text/event-stream"].is_object(),
            "{what}"
        );
        return (status, Vec::new());
    }
    let body = response.bytes().await.expect("body").to_vec();
    let media = content_type.split(';').next().unwrap_or_default().trim();
    if let Some(content) = documented["content"].as_object() {
        let declared = content
            .keys()
            .any(|k| k.split(';').next().unwrap_or_default().trim() == media);
        assert!(
            declared,
            "{what}: answered {media}, documented {:?}",
            content.keys()
        );
        if media == "application/json" {
            let value: Value =
                serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{what}: not JSON: {e}"));
            let schema = &content["application/json"]["schema"];
            let validator = validator(doc, schema);
            let errors: Vec<String> = validator
                .iter_errors(&value)
                .map(|e| format!("{} at {}", e, e.instance_path()))
                .collect();
            assert!(
                errors.is_empty(),
                "{what}: the answer does not match the document: {errors:?}\n{value}"
            );
        }
    } else {
        assert!(
            body.is_empty(),
            "{what}: a body where the document says none"
        );
    }
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_answers_as_documented() {
    let dir = common::test_dir();
    let mut config_a = local_config("a", &dir.path().join("a"), Vec::new());
    config_a.api.token = Some(TOKEN.into());
    let a = daemon::start(config_a).await.expect("replica a");
    let mut config_b = local_config("b", &dir.path().join("b"), vec![a.dial_addr().expect("a")]);
    config_b.api.token = Some(TOKEN.into());
    let b = daemon::start(config_b).await.expect("replica b");
    let base = format!("http://{}", a.api);
    // Redirects are answers to check, not to follow.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client");
    let b_id = b.peer_id.to_base58();
    // b must be known to a before its drain can be ordered.
    for _ in 0..100 {
        let nodes: Value = http
            .get(format!("{base}/v1/nodes"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("nodes")
            .json()
            .await
            .expect("nodes json");
        if nodes.to_string().contains(&b_id) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    let doc: Value = http
        .get(format!("{base}/v1/openapi.json"))
        .send()
        .await
        .expect("the document")
        .json()
        .await
        .expect("the document is JSON");
    assert!(doc["openapi"]
        .as_str()
        .is_some_and(|v| v.starts_with("3.1")));

    let room = "/v1/rooms/r1";
    let session = "/v1/rooms/r1/participants/s1";
    let join = json!({
        "session": "s1", "user": "u1", "role": "speaker",
        "owner": "media-1", "region": "eu", "resume_token": "tok",
    });
    let mut cases = vec![
        case(Method::GET, "/v1/health", "/v1/health", None),
        case(Method::GET, "/v1/ready", "/v1/ready", None),
        case(Method::GET, "/metrics", "/metrics", None),
        case(Method::GET, "/v1/openapi.json", "/v1/openapi.json", None),
        case(Method::GET, "/ui/", "/ui/", None),
        case(Method::GET, "/ui/app.js", "/ui/app.js", None),
        case(Method::GET, "/ui/style.css", "/ui/style.css", None),
        case(
            Method::PUT,
            "/v1/rooms/{room}",
            room,
            Some(json!({"max_participants": 8})),
        ),
        case(Method::GET, "/v1/rooms", "/v1/rooms", None),
        case(Method::GET, "/v1/rooms/{room}", room, None),
        case(
            Method::POST,
            "/v1/rooms/{room}/participants",
            "/v1/rooms/r1/participants",
            Some(join),
        ),
    ];
    let fields = [
        (
            Method::PUT,
            "/v1/rooms/{room}/participants/{session}/state",
            format!("{session}/state"),
            Some(json!({"state": "active"})),
        ),
        (
            Method::PUT,
            "/v1/rooms/{room}/participants/{session}/tracks/{track}",
            format!("{session}/tracks/t1"),
            Some(json!({"kind": "video", "simulcast_layers": 3})),
        ),
        (
            Method::DELETE,
            "/v1/rooms/{room}/participants/{session}/tracks/{track}",
            format!("{session}/tracks/t1"),
            None,
        ),
        (
            Method::PUT,
            "/v1/rooms/{room}/permissions/{user}",
            format!("{room}/permissions/u1"),
            Some(json!({"role": "host", "publish": true, "subscribe": true})),
        ),
        (
            Method::DELETE,
            "/v1/rooms/{room}/permissions/{user}",
            format!("{room}/permissions/u1"),
            None,
        ),
        (
            Method::PUT,
            "/v1/rooms/{room}/attributes/{key}",
            format!("{room}/attributes/topic"),
            Some(json!({"value": "standup"})),
        ),
        (
            Method::DELETE,
            "/v1/rooms/{room}/attributes/{key}",
            format!("{room}/attributes/topic"),
            None,
        ),
        (
            Method::PUT,
            "/v1/rooms/{room}/participants/{session}/owner",
            format!("{session}/owner"),
            Some(json!({"epoch": 5, "node": "media-2"})),
        ),
        (
            Method::POST,
            "/v1/rooms/{room}/participants/{session}/resume",
            format!("{session}/resume"),
            Some(json!({"token": "tok"})),
        ),
        (
            Method::POST,
            "/v1/rooms/{room}/batch",
            format!("{room}/batch"),
            Some(json!({"ops": [{"op": "set_state", "session": "s1", "state": "reconnecting"}]})),
        ),
    ];
    for (method, template, path, body) in fields {
        cases.push(case(method, template, &path, body));
    }
    let mut seen = BTreeSet::new();
    let mut walk = |cases: Vec<Case>| {
        cases
            .into_iter()
            .inspect(|c| {
                seen.insert((c.method.as_str().to_string(), c.template.to_string()));
            })
            .collect::<Vec<_>>()
    };
    for c in walk(cases) {
        let (status, _) = check(&http, &base, &doc, &c, true).await;
        assert!(status.is_success(), "{} {}: {status}", c.method, c.path);
    }
    // The raw document, out and back in.
    let export = case(
        Method::GET,
        "/v1/rooms/{room}/automerge",
        "/v1/rooms/r1/automerge",
        None,
    );
    let (_, bytes) = check(&http, &base, &doc, &export, true).await;
    assert!(!bytes.is_empty());
    let import = Case {
        body: Some(Body::Bytes(bytes)),
        ..case(
            Method::POST,
            "/v1/rooms/{room}/automerge",
            "/v1/rooms/r1/automerge",
            None,
        )
    };
    let later = vec![
        export,
        import,
        case(
            Method::DELETE,
            "/v1/rooms/{room}/participants/{session}",
            session,
            None,
        ),
        case(Method::GET, "/v1/cluster", "/v1/cluster", None),
        case(Method::GET, "/v1/incidents", "/v1/incidents?limit=10", None),
        case(Method::GET, "/v1/changes", "/v1/changes", None),
        case(Method::GET, "/v1/nodes", "/v1/nodes", None),
        case(
            Method::POST,
            "/v1/nodes/{node}/drain",
            &format!("/v1/nodes/{b_id}/drain"),
            Some(json!({"rate_per_s": 5})),
        ),
        case(
            Method::DELETE,
            "/v1/nodes/{node}/drain",
            &format!("/v1/nodes/{b_id}/drain"),
            None,
        ),
        case(
            Method::GET,
            "/v1/placement",
            "/v1/placement?room=r1&session=s2&region=eu",
            None,
        ),
        case(
            Method::POST,
            "/v1/health/app",
            "/v1/health/app",
            Some(json!({"load": 0.5})),
        ),
        case(
            Method::POST,
            "/v1/drill/partition",
            "/v1/drill/partition",
            Some(json!({"peers": [b_id]})),
        ),
        case(Method::POST, "/v1/drill/heal", "/v1/drill/heal", None),
        case(Method::DELETE, "/v1/rooms/{room}", room, None),
        case(Method::GET, "/ui", "/ui", None),
        // Last: the daemon starts to leave.
        case(
            Method::POST,
            "/v1/leave",
            "/v1/leave",
            Some(json!({"intent": "restart"})),
        ),
    ];
    let later = walk(later);
    for c in &later[1..] {
        let (status, _) = check(&http, &base, &doc, c, true).await;
        assert!(
            status.is_success() || status == StatusCode::PERMANENT_REDIRECT,
            "{} {}: {status}",
            c.method,
            c.path
        );
    }

    // Every documented operation was exercised, and nothing else.
    let documented = operations(&doc);
    assert_eq!(
        seen, documented,
        "the walk and the document differ: add a case for a new route"
    );

    // Failures are documented too: without the token, an unknown room, a
    // bad body.
    let secured: Vec<(String, String)> = documented
        .iter()
        .filter(|(m, p)| doc["paths"][p][m.to_lowercase()]["security"].is_array())
        .cloned()
        .collect();
    assert!(
        secured.len() > 20,
        "the guarded routes say they need the token"
    );
    for (method, template) in &secured {
        let path = template
            .replace("{room}", "r1")
            .replace("{session}", "s1")
            .replace("{track}", "t1")
            .replace("{user}", "u1")
            .replace("{key}", "k")
            .replace("{node}", &b_id);
        let c = Case {
            method: Method::from_bytes(method.as_bytes()).expect("a method"),
            template: Box::leak(template.clone().into_boxed_str()),
            path,
            body: None,
        };
        let (status, _) = check(&http, &base, &doc, &c, false).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {template}");
    }
    let missing = case(Method::GET, "/v1/rooms/{room}", "/v1/rooms/nope", None);
    assert_eq!(
        check(&http, &base, &doc, &missing, true).await.0,
        StatusCode::NOT_FOUND
    );
    let bad = case(
        Method::PUT,
        "/v1/rooms/{room}/participants/{session}/state",
        "/v1/rooms/r2/participants/s1/state",
        Some(json!({"state": "sideways"})),
    );
    let (status, _) = check(&http, &base, &doc, &bad, true).await;
    assert!(status.is_client_error(), "{status}");
    drop(b);
}

/// A path in the daemon's source matches a documented template.
fn matches(template: &str, path: &str) -> bool {
    let path = path.split('?').next().unwrap_or_default();
    let (t, p): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| t == p || (t.starts_with('{') && !p.is_empty()) || p.starts_with('{'))
}

fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).expect("read the source dir") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).expect("read a source file");
            out.push((path.display().to_string(), text));
        }
    }
}

#[test]
fn every_route_in_the_code_is_documented() {
    let doc: Value = serde_json::to_value(chorus_node::api::openapi()).expect("the document");
    let documented: Vec<String> = doc["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .cloned()
        .collect();
    let mut files = Vec::new();
    sources(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    assert!(files.len() > 10);
    let mut undocumented = Vec::new();
    let mut paths = 0;
    for (file, text) in &files {
        // Routes registered around the annotations would be invisible to
        // the document.
        for needle in [".route(", ".route_service(", ".nest(", ".nest_service("] {
            assert!(
                !text.contains(needle),
                "{file} registers a route with `{needle}`: use utoipa_axum's routes! so it is documented"
            );
        }
        // Every API path the code names (the CLI's calls, the demo's, the
        // ones error messages and comments point to) is a documented one.
        for (at, _) in text.match_indices("/v1/") {
            let candidate: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || "_.-/{}?=&".contains(*c))
                .collect();
            let candidate = candidate.trim_end_matches(['.', '/']);
            paths += 1;
            if !documented.iter().any(|t| matches(t, candidate)) {
                undocumented.push(format!("{file}: {candidate}"));
            }
        }
    }
    assert!(paths > 30, "the scan found the code's paths ({paths})");
    assert!(
        undocumented.is_empty(),
        "paths not in the document: {undocumented:#?}"
    );
}
