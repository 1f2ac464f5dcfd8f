//! Environment overrides for any key of the configuration file, nested
//! sections included: `CHORUS_<SECTION>__<KEY>`, each `__` a step down,
//! e.g. `CHORUS_REPLICA__HOT_ROOMS=8192` or
//! `CHORUS_REPLICA__DETECTOR__PROBE_PERIOD_MS=250` (the scheme figment and
//! config-rs use). The value is read as a TOML value (`8192`, `true`,
//! `["a", "b"]`), else as a string. The top-level keys also keep their
//! single-underscore names (`Config::apply_env`).

use anyhow::bail;

const PREFIX: &str = "CHORUS_";
const STEP: &str = "__";

/// The process's `CHORUS_*` variables. One that is not Unicode is an
/// error naming it (`std::env::vars` would panic on any such variable,
/// ours or not).
pub fn chorus_vars() -> anyhow::Result<Vec<(String, String)>> {
    let mut vars = Vec::new();
    for (name, value) in std::env::vars_os() {
        let Some(name) = name.to_str().filter(|n| n.starts_with(PREFIX)) else {
            continue;
        };
        let Some(value) = value.to_str() else {
            bail!("{name}: not valid UTF-8");
        };
        vars.push((name.to_string(), value.to_string()));
    }
    Ok(vars)
}

/// Sets every `CHORUS_…__…` variable of `vars` into `table`, the parsed
/// configuration file, before it is read as a `Config` (so an unknown key
/// is refused by name, as in the file). `typed`: values read as TOML
/// values where they parse; otherwise every value is a string.
pub fn apply(
    table: &mut toml::Table,
    vars: impl IntoIterator<Item = (String, String)>,
    typed: bool,
) -> anyhow::Result<Vec<String>> {
    let mut applied = Vec::new();
    for (name, text) in vars {
        let Some(path) = name.strip_prefix(PREFIX) else {
            continue;
        };
        if !path.contains(STEP) {
            continue;
        }
        let keys: Vec<String> = path.split(STEP).map(str::to_ascii_lowercase).collect();
        if keys.iter().any(String::is_empty) {
            bail!("{name}: an empty key between `__`");
        }
        let Some((last, sections)) = keys.split_last() else {
            continue;
        };
        let mut at = &mut *table;
        for section in sections {
            let entry = at
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            at = match entry {
                toml::Value::Table(inner) => inner,
                _ => bail!("{name}: `{section}` is a value, not a section"),
            };
        }
        let value = if typed {
            value_of(&text)
        } else {
            toml::Value::String(text)
        };
        at.insert(last.clone(), value);
        applied.push(name);
    }
    Ok(applied)
}

/// `text` as a TOML value, else as a string.
fn value_of(text: &str) -> toml::Value {
    format!("v = {text}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn nested_keys_and_values() {
        let mut table: toml::Table = "[replica]\nhot_rooms = 1".parse().expect("toml");
        let applied = apply(
            &mut table,
            vars(&[
                ("CHORUS_REPLICA__HOT_ROOMS", "8192"),
                ("CHORUS_REPLICA__DETECTOR__PROBE_PERIOD_MS", "250"),
                ("CHORUS_API__TOKEN", "secret token"),
                ("CHORUS_NAME", "ignored here"),
                ("HOME", "/"),
            ]),
            true,
        )
        .expect("applies");
        assert_eq!(applied.len(), 3);
        assert_eq!(table["replica"]["hot_rooms"].as_integer(), Some(8192));
        assert_eq!(
            table["replica"]["detector"]["probe_period_ms"].as_integer(),
            Some(250)
        );
        assert_eq!(table["api"]["token"].as_str(), Some("secret token"));
        assert!(table.get("name").is_none());
    }

    #[test]
    fn a_value_in_the_way_or_an_empty_key_is_refused_by_name() {
        let mut table: toml::Table = "region = \"eu\"".parse().expect("toml");
        let err = apply(&mut table, vars(&[("CHORUS_REGION__X", "1")]), true).unwrap_err();
        assert!(err.to_string().contains("CHORUS_REGION__X"), "{err}");
        let err = apply(&mut table, vars(&[("CHORUS_REPLICA____X", "1")]), true).unwrap_err();
        assert!(err.to_string().contains("empty key"), "{err}");
    }
}
