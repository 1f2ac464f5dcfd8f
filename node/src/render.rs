//! The CLI's `-o table` output: headed, aligned tables in kubectl's layout
//! (upper-case headers, columns two spaces apart, the last one unpadded),
//! from the API's JSON. `-o json` prints the JSON itself; these functions
//! only read it, so a field a newer daemon adds is ignored and a missing one
//! prints as `-`.

use serde_json::Value;

/// Rows under headers, aligned on the widest cell of each column.
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<S: AsRef<str>>(headers: &[S]) -> Self {
        Self {
            headers: headers.iter().map(|h| h.as_ref().to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
        let mut out = String::new();
        for cells in std::iter::once(&self.headers).chain(&self.rows) {
            let last = cells.len().min(widths.len()).saturating_sub(1);
            let mut line = String::new();
            for (i, cell) in cells.iter().enumerate().take(widths.len()) {
                if i == last {
                    line.push_str(cell);
                } else {
                    let pad = widths[i].saturating_sub(cell.chars().count());
                    line.push_str(cell);
                    line.push_str(&" ".repeat(pad + 2));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A JSON value as a cell: strings bare, null or absent as `-`. Control
/// characters (a terminal escape in an incident's detail, a newline that
/// would break the row) print as `?`.
fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect(),
        Value::Bool(b) => if *b { "yes" } else { "no" }.into(),
        other => other.to_string(),
    }
}

fn items(value: &Value) -> &[Value] {
    value.as_array().map_or(&[], Vec::as_slice)
}

/// `chorus status` (`GET /v1/health`).
pub fn status(health: &Value) -> String {
    let mut t = Table::new(&["NAME", "STATUS", "PEERS", "ROOMS", "PEER ID"]);
    t.row(vec![
        cell(&health["name"]),
        cell(&health["status"]),
        cell(&health["connected_peers"]),
        cell(&health["rooms"]),
        cell(&health["peer_id"]),
    ]);
    t.render()
}

/// `chorus cluster` (`GET /v1/cluster`): this replica, then its peers.
pub fn cluster(view: &Value) -> String {
    let mut me = Table::new(&["NAME", "REGION", "ROOMS", "DIGEST ROOT", "PEER ID"]);
    me.row(vec![
        cell(&view["name"]),
        cell(&view["region"]),
        cell(&view["rooms"]),
        cell(&view["root"]),
        cell(&view["peer_id"]),
    ]);
    let mut peers = Table::new(&["PEER", "CONNECTED", "CUT BY DRILL", "LAST SYNC", "PATH"]);
    for p in items(&view["peers"]) {
        let ago = p["last_sync_ago_ms"]
            .as_u64()
            .map_or_else(|| "-".to_string(), |ms| format!("{ms} ms ago"));
        peers.row(vec![
            cell(&p["peer_id"]),
            cell(&p["connected"]),
            cell(&p["cut_by_drill"]),
            ago,
            cell(&p["last_sync_path"]),
        ]);
    }
    format!("{}\n{}", me.render(), peers.render())
}

/// `chorus rooms list` (`GET /v1/rooms`).
pub fn room_list(rooms: &Value) -> String {
    let mut t = Table::new(&["ROOM", "TENANT", "LIFECYCLE"]);
    for r in items(rooms) {
        t.row(vec![
            cell(&r["id"]),
            cell(&r["tenant"]),
            cell(&r["lifecycle"]),
        ]);
    }
    t.render()
}

/// `chorus rooms get` (`GET /v1/rooms/{room}`): the room, then its
/// sessions.
pub fn room(room: &Value) -> String {
    let mut head = Table::new(&["ROOM", "TENANT", "LIFECYCLE", "MAX", "REGION", "RECORDING"]);
    let config = &room["config"];
    head.row(vec![
        cell(&room["id"]),
        cell(&room["tenant"]),
        cell(&room["lifecycle"]),
        cell(&config["max_participants"]),
        cell(&config["preferred_region"]),
        cell(&config["recording"]),
    ]);
    let mut sessions = Table::new(&[
        "SESSION", "USER", "ROLE", "STATE", "HOST", "EPOCH", "REGION", "TRACKS",
    ]);
    if let Some(all) = room["sessions"].as_object() {
        for (id, s) in all {
            let tracks: Vec<String> = s["tracks"]
                .as_object()
                .map(|t| {
                    t.iter()
                        .map(|(id, track)| format!("{id}:{}", cell(&track["kind"])))
                        .collect()
                })
                .unwrap_or_default();
            sessions.row(vec![
                id.clone(),
                cell(&s["user"]),
                cell(&s["role"]),
                cell(&s["state"]),
                cell(&s["owner"]["node"]),
                cell(&s["owner"]["epoch"]),
                cell(&s["region"]),
                if tracks.is_empty() {
                    "-".into()
                } else {
                    tracks.join(",")
                },
            ]);
        }
    }
    format!("{}\n{}", head.render(), sessions.render())
}

/// A write's answer (`{room, heads}`).
pub fn write_ack(ack: &Value) -> String {
    let mut t = Table::new(&["ROOM", "HEADS"]);
    let heads: Vec<String> = items(&ack["heads"]).iter().map(cell).collect();
    t.row(vec![cell(&ack["room"]), heads.join(",")]);
    t.render()
}

/// `chorus nodes` (`GET /v1/nodes`): every node, then the moves in
/// progress. `names` maps peer ids to names where this CLI knows them.
pub fn nodes(view: &Value, names: &[(String, String)]) -> String {
    let name_of = |id: &str| {
        names
            .iter()
            .find(|(peer, _)| peer == id)
            .map_or("-".to_string(), |(_, name)| name.clone())
    };
    let mut t = Table::new(&[
        "NODE", "NAME", "GRADE", "DRAINING", "REGION", "CAPACITY", "LOAD", "REASON",
    ]);
    for n in items(&view["nodes"]) {
        let id = cell(&n["node"]);
        let report = &n["report"];
        let load = report["app"]["load_permille"]
            .as_u64()
            .map_or("-".to_string(), |p| format!("{:.2}", p as f64 / 1000.0));
        t.row(vec![
            id.clone(),
            name_of(&id),
            cell(&n["grade"]),
            cell(&n["draining"]),
            cell(&report["region"]),
            cell(&report["capacity"]),
            load,
            cell(&n["reason"]),
        ]);
    }
    let mut out = t.render();
    let moves = items(&view["moves"]);
    if !moves.is_empty() {
        let mut m = Table::new(&[
            "MOVING FROM",
            "KIND",
            "CALLS AT START",
            "CALLS LEFT",
            "RATE/S",
        ]);
        for mv in moves {
            m.row(vec![
                cell(&mv["node"]),
                cell(&mv["kind"]),
                cell(&mv["calls_at_start"]),
                cell(&mv["calls_left"]),
                cell(&mv["rate_per_s"]),
            ]);
        }
        out.push('\n');
        out.push_str(&m.render());
    }
    out
}

/// `chorus drain` (a drain order, or null).
pub fn drain_order(order: &Value) -> String {
    let mut t = Table::new(&["NODE", "ACTIVE", "RATE/S"]);
    if !order.is_null() {
        t.row(vec![
            cell(&order["node"]),
            cell(&order["active"]),
            cell(&order["rate_per_s"]),
        ]);
    }
    t.render()
}

/// Any other object: one row, its fields as columns, in the JSON's order.
pub fn object(value: &Value) -> String {
    let Some(fields) = value.as_object() else {
        return format!("{}\n", cell(value));
    };
    let headers: Vec<String> = fields
        .keys()
        .map(|k| k.to_uppercase().replace('_', " "))
        .collect();
    let mut t = Table::new(&headers);
    t.row(fields.values().map(cell).collect());
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn columns_align_under_their_headers() {
        let mut t = Table::new(&["A", "LONG HEADER", "LAST"]);
        t.row(vec!["wide cell".into(), "x".into(), "free text".into()]);
        let text = t.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "A          LONG HEADER  LAST");
        assert_eq!(lines[1], "wide cell  x            free text");
    }

    #[test]
    fn control_characters_do_not_reach_the_terminal() {
        let text = object(&json!({"detail": "a\u{1b}[2Jb\nc"}));
        assert_eq!(text.lines().nth(1), Some("a?[2Jb?c"), "{text:?}");
    }

    #[test]
    fn nodes_show_names_grades_and_missing_fields_as_dashes() {
        let view = json!({"nodes": [
            {"node": "p1", "grade": "down", "draining": false, "reason": "convicted",
             "report": {"region": "eu", "capacity": 100, "app": {"load_permille": 1500}}},
            {"node": "p2", "grade": "healthy", "draining": true, "reason": "", "report": null},
        ], "moves": [{"node": "p1", "kind": "failover", "calls_at_start": 8, "calls_left": 2, "rate_per_s": 50}]});
        let text = nodes(&view, &[("p1".into(), "media-a".into())]);
        assert!(text.starts_with("NODE  NAME     GRADE"), "{text}");
        assert!(
            text.contains("p1    media-a  down     no        eu      100       1.50  convicted"),
            "{text}"
        );
        assert!(
            text.contains("p2    -        healthy  yes       -       -         -"),
            "{text}"
        );
        assert!(text.contains("MOVING FROM"), "{text}");
    }
}
