//! Tables for people, JSON for scripts.

use chrono::{DateTime, Utc};
use comfy_table::presets::NOTHING;
use comfy_table::{Cell, ContentArrangement, Table};
use serde::Serialize;

/// A table with a header row and space-separated columns (easy to read,
/// easy to `grep` and `awk`).
pub fn table<const N: usize>(header: [&str; N]) -> Table {
    let mut table = Table::new();
    table
        .load_style(NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.iter().map(|h| Cell::new(h.to_uppercase())));
    table
}

/// A two-column table of named values, for one object.
pub fn details(rows: &[(&str, String)]) -> Table {
    let mut table = Table::new();
    table
        .load_style(NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled);
    for (name, value) in rows {
        table.add_row([Cell::new(name), Cell::new(value)]);
    }
    table
}

/// Prints `value` as pretty JSON.
pub fn print_json<T: Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        // Only non-string map keys fail, which the API's JSON never has.
        Err(error) => eprintln!("adesync: cannot print JSON: {error}"),
    }
}

/// A time for a table: RFC 3339 to the second, or "-".
pub fn time(at: Option<DateTime<Utc>>) -> String {
    at.map_or_else(
        || "-".to_owned(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

/// An optional text for a table, or "-".
pub fn text(value: Option<&str>) -> String {
    value.unwrap_or("-").to_owned()
}

/// Seconds as people say them: "42 s", "14 min 52 s", "3 h 5 min", "6 d 23 h".
pub fn seconds(total: u64) -> String {
    let (days, hours, minutes, secs) = (
        total / 86_400,
        total / 3600 % 24,
        total / 60 % 60,
        total % 60,
    );
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{secs} s"),
        (0, 0, _) => format!("{minutes} min {secs} s"),
        (0, _, _) => format!("{hours} h {minutes} min"),
        _ => format!("{days} d {hours} h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_read_as_people_say_them() {
        assert_eq!(seconds(42), "42 s");
        assert_eq!(seconds(892), "14 min 52 s");
        assert_eq!(seconds(3 * 3600 + 300), "3 h 5 min");
        assert_eq!(seconds(7 * 24 * 3600 - 60), "6 d 23 h");
    }

    #[test]
    fn tables_are_plain_columns() {
        let mut t = table(["serial", "state"]);
        t.add_row(["C02XYZ", "active"]);
        let text = t.to_string();
        assert!(text.contains("SERIAL"), "{text}");
        assert!(
            text.lines()
                .any(|l| l.contains("C02XYZ") && l.contains("active"))
        );
        assert!(!text.contains('|'), "{text}");
    }
}
