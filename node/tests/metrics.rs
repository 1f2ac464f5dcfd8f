//! `/metrics` on real daemons: the exposition is valid OpenMetrics (checked
//! by a strict reader below, not by the encoder that wrote it), keeps the
//! counters' names, and carries the latency histograms with samples once
//! the replica has written, synced and served.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use chorus_node::daemon::Running;
use chorus_node::demo::{local_config, wait_for};

/// One metric family as read back: its type, unit and samples
/// (`name{labels}` → value, labels as written).
#[derive(Debug, Default)]
struct Family {
    kind: String,
    unit: Option<String>,
    help: bool,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

/// Reads an OpenMetrics text exposition strictly enough to catch what a
/// scraper refuses: metadata before samples, sample names that fit their
/// family's type, well-formed labels and values, cumulative histogram
/// buckets ending at `+Inf` equal to `_count`, no family twice, and `# EOF`
/// last. Panics with the offending line.
fn parse(text: &str) -> BTreeMap<String, Family> {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut eof = false;
    for line in text.lines() {
        assert!(!eof, "a line after # EOF: {line:?}");
        if line == "# EOF" {
            eof = true;
            continue;
        }
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let (what, name) = (parts.next().unwrap(), parts.next().expect(line));
            let rest = parts.next().unwrap_or("");
            if current.as_deref() != Some(name) {
                assert!(!families.contains_key(name), "family twice: {line:?}");
                current = Some(name.to_owned());
            }
            let family = families.entry(name.to_owned()).or_default();
            assert!(
                family.samples.is_empty(),
                "metadata after samples: {line:?}"
            );
            match what {
                "TYPE" => {
                    let known = ["counter", "gauge", "histogram", "info", "summary"];
                    assert!(known.contains(&rest), "{line:?}");
                    family.kind = rest.to_owned();
                }
                "HELP" => family.help = true,
                "UNIT" => {
                    assert!(name.ends_with(&format!("_{rest}")), "{line:?}");
                    family.unit = Some(rest.to_owned());
                }
                _ => panic!("unknown metadata: {line:?}"),
            }
            continue;
        }
        let name = current
            .clone()
            .unwrap_or_else(|| panic!("no family: {line:?}"));
        let family = families.get_mut(&name).unwrap();
        let (sample, labels, value) = sample(line);
        let suffixes: &[&str] = match family.kind.as_str() {
            "counter" => &["_total", "_created"],
            "gauge" => &[""],
            "info" => &["_info"],
            "histogram" => &["_bucket", "_sum", "_count", "_created"],
            other => panic!("samples for a family of type {other:?}: {line:?}"),
        };
        assert!(
            suffixes.iter().any(|s| sample == format!("{name}{s}")),
            "{sample} is not a sample of {} {name}",
            family.kind
        );
        family.samples.push((sample, labels, value));
    }
    assert!(eof, "no # EOF");
    for (name, family) in &families {
        assert!(family.help && !family.kind.is_empty(), "{name}: {family:?}");
        if family.kind == "histogram" {
            check_buckets(name, family);
        }
    }
    families
}

/// `name{k="v",...} value` (labels optional).
fn sample(line: &str) -> (String, BTreeMap<String, String>, f64) {
    let (head, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line:?}"));
    let value: f64 = match value {
        "+Inf" => f64::INFINITY,
        v => v.parse().unwrap_or_else(|_| panic!("value: {line:?}")),
    };
    let (name, labels) = match head.split_once('{') {
        None => (head, BTreeMap::new()),
        Some((name, rest)) => {
            let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("{line:?}"));
            (name, labels(body, line))
        }
    };
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    assert!(!name.is_empty() && name.chars().all(valid), "{line:?}");
    (name.to_owned(), labels, value)
}

/// `k="v",k2="v2"`, with `\\`, `\"` and `\n` the only escapes.
fn labels(mut body: &str, line: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    while !body.is_empty() {
        let (key, rest) = body.split_once("=\"").unwrap_or_else(|| panic!("{line:?}"));
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    _ => panic!("bad escape: {line:?}"),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label: {line:?}"),
            }
        };
        assert!(labels.insert(key.to_owned(), value).is_none(), "{line:?}");
        body = &rest[end + 1..];
        body = body.strip_prefix(',').unwrap_or(body);
    }
    labels
}

/// Per label set (without `le`): buckets ascending and cumulative, the
/// last `+Inf` and equal to `_count`.
fn check_buckets(name: &str, family: &Family) {
    let mut series: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
    let mut counts = BTreeMap::new();
    for (sample, labels, value) in &family.samples {
        let mut labels = labels.clone();
        if sample.ends_with("_bucket") {
            let le = labels.remove("le").expect("a bucket's le");
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().expect(&le)
            };
            series.entry(labels).or_default().push((le, *value));
        } else if sample.ends_with("_count") {
            counts.insert(labels, *value);
        }
    }
    assert_eq!(
        series.keys().collect::<BTreeSet<_>>(),
        counts.keys().collect::<BTreeSet<_>>(),
        "{name}"
    );
    for (labels, buckets) in &series {
        assert!(
            buckets
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
            "{name}"
        );
        assert_eq!(buckets.last().map(|b| b.0), Some(f64::INFINITY), "{name}");
        assert_eq!(
            buckets.last().map(|b| b.1),
            counts.get(labels).copied(),
            "{name}"
        );
    }
}

async fn scrape(node: &Running) -> BTreeMap<String, Family> {
    let text = reqwest::get(format!("http://{}/metrics", node.api))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body");
    // `SHOW_METRICS=1 cargo test ... -- --nocapture` prints each scrape.
    if std::env::var_os("SHOW_METRICS").is_some() {
        eprintln!("{text}");
    }
    parse(&text)
}

/// `_count` of a histogram family's series whose labels include `with`.
fn count(families: &BTreeMap<String, Family>, name: &str, with: &[(&str, &str)]) -> f64 {
    let family = families.get(name).unwrap_or_else(|| panic!("no {name}"));
    assert_eq!(
        (family.kind.as_str(), family.unit.as_deref()),
        ("histogram", Some("seconds"))
    );
    family
        .samples
        .iter()
        .filter(|(s, labels, _)| {
            s.ends_with("_count")
                && with
                    .iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_daemon_exports_counters_and_latency_histograms() {
    let root = common::test_dir();
    let node = chorus_node::daemon::start(local_config("m", root.path(), Vec::new()))
        .await
        .expect("daemon");
    common::create_room(&node, "r1").await;
    common::create_room(&node, "r2").await;
    let _ = reqwest::get(format!("http://{}/no/such/route", node.api)).await;
    let families = scrape(&node).await;

    // The names operators and alert rules already use, with their types.
    for (name, kind) in [
        ("chorus_local_writes", "counter"),
        ("chorus_sent_bytes", "counter"),
        ("chorus_sync", "counter"),
        ("chorus_rounds_mismatched", "counter"),
        ("chorus_refused_connections", "counter"),
        ("chorus_connected_peers", "gauge"),
        ("chorus_rooms", "gauge"),
        ("chorus_node_grade", "gauge"),
        ("chorus_build", "info"),
    ] {
        let family = families.get(name).unwrap_or_else(|| panic!("no {name}"));
        assert_eq!(family.kind, kind, "{name}");
    }
    let local_writes = &families["chorus_local_writes"].samples;
    assert_eq!(local_writes[0].0, "chorus_local_writes_total");
    assert!(local_writes[0].2 >= 2.0, "{local_writes:?}");
    let sync: BTreeSet<_> = families["chorus_sync"]
        .samples
        .iter()
        .map(|s| s.1["path"].clone())
        .collect();
    assert_eq!(
        sync,
        ["full", "incremental", "since"].map(String::from).into()
    );

    assert!(count(&families, "chorus_write_ack_seconds", &[]) >= 2.0);
    let writes = &families["chorus_write_ack_seconds"].samples;
    let sum = writes
        .iter()
        .find(|s| s.0.ends_with("_sum"))
        .expect("_sum")
        .2;
    assert!(sum > 0.0, "{writes:?}");
    // Nothing to replicate on a lone replica: the families are there, empty.
    for name in [
        "chorus_remote_apply_seconds",
        "chorus_replication_lag_seconds",
        "chorus_sync_round_seconds",
    ] {
        assert_eq!(count(&families, name, &[]), 0.0, "{name}");
    }
    let put = [("method", "PUT"), ("route", "/v1/rooms/{room}")];
    assert!(count(&families, "chorus_http_request_seconds", &put) >= 2.0);
    assert!(
        count(
            &families,
            "chorus_http_request_seconds",
            &[("route", "unmatched")]
        ) >= 1.0
    );
    node.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_times_remote_applies_replication_lag_and_rounds() {
    let root = common::test_dir();
    let (a, b) = common::two_replicas(root.path()).await;
    wait_for("b connected to a", || async {
        let families = scrape(&b).await;
        Ok(families["chorus_connected_peers"].samples[0].2 >= 1.0)
    })
    .await
    .expect("connected");
    common::create_room(&a, "from-a").await;
    wait_for("b applied a's write and timed it", || async {
        let families = scrape(&b).await;
        Ok(count(&families, "chorus_remote_apply_seconds", &[]) >= 1.0
            && count(&families, "chorus_replication_lag_seconds", &[]) >= 1.0
            && count(&families, "chorus_sync_round_seconds", &[]) >= 1.0)
    })
    .await
    .expect("b's histograms count a's write and their rounds");
    let families = scrape(&b).await;
    let received = families["chorus_changes_received"].samples[0].2;
    let applied = families["chorus_changes_applied"].samples[0].2;
    assert!(
        received >= applied && applied >= 1.0,
        "received {received}, applied {applied}"
    );
    // The wire counters sit under noise and yamux: everything the replica
    // sent by gossip (its push) is in them, and more.
    let at_a = scrape(&a).await;
    let wire_sent = at_a["chorus_wire_sent_bytes"].samples[0].2;
    let pushed: f64 = at_a["chorus_sent_bytes"]
        .samples
        .iter()
        .filter(|(_, labels, _)| labels.get("kind").map(String::as_str) == Some("push"))
        .map(|(_, _, v)| v)
        .sum();
    assert!(pushed > 0.0, "a pushed its write");
    assert!(wire_sent > pushed, "wire {wire_sent}, pushed {pushed}");
    assert!(at_a["chorus_wire_received_bytes"].samples[0].2 > 0.0);
    b.stop().await.expect("stop b");
    a.stop().await.expect("stop a");
}

/// The reader above is what makes "parses as OpenMetrics" mean something:
/// it refuses expositions a scraper refuses.
#[test]
fn the_reader_refuses_broken_expositions() {
    let good = "# HELP h_seconds H.\n# TYPE h_seconds histogram\n# UNIT h_seconds seconds\n\
                h_seconds_sum 1.5\nh_seconds_count 2\n\
                h_seconds_bucket{le=\"0.5\"} 1\nh_seconds_bucket{le=\"+Inf\"} 2\n\
                # HELP c C.\n# TYPE c counter\nc_total{k=\"a\\\"b\"} 3\n# EOF\n";
    let families = parse(good);
    assert_eq!(families["c"].samples[0].1["k"], "a\"b");
    for broken in [
        good.replace("# EOF\n", ""),
        good.replace("c_total", "c"),
        good.replace(
            "h_seconds_bucket{le=\"0.5\"} 1",
            "h_seconds_bucket{le=\"0.5\"} 3",
        ),
        good.replace("h_seconds_count 2", "h_seconds_count 5"),
        good.replace("{le=\"+Inf\"}", "{le=\"9\"}"),
        good.replace("k=\"a\\\"b\"", "k=\"a"),
        good.replace("# TYPE c counter\n", ""),
        format!("{good}c_total 1\n"),
    ] {
        let refused = std::panic::catch_unwind(|| parse(&broken)).is_err();
        assert!(refused, "accepted:\n{broken}");
    }
}
