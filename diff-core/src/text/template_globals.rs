//! The functions and filters `transformers` adds to its chat-template environment, reimplemented for minijinja:
//! `raise_exception(msg)`, `strftime_now(format)` and a `tojson` that writes JSON the way Python's `json.dumps`
//! does (`", "` and `": "` separators, no HTML escaping, keys in insertion order).

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Error as JinjaError, ErrorKind, Value};

/// The message a template passed to `raise_exception`, carried as the source of the render error.
#[derive(Debug)]
pub(crate) struct RaisedByTemplate(pub(crate) String);

impl std::fmt::Display for RaisedByTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RaisedByTemplate {}

/// `raise_exception(msg)`: fails the render with `msg` (found again through [`RaisedByTemplate`]).
pub(crate) fn raise_exception(message: String) -> Result<Value, JinjaError> {
    Err(JinjaError::new(ErrorKind::InvalidOperation, message.clone()).with_source(RaisedByTemplate(message)))
}

/// `strftime_now(format)`: the current time formatted like Python's `datetime.now().strftime(format)`.
///
/// The time is UTC (transformers uses local time); the date-only formats chat templates use (`"%d %b %Y"`,
/// `"%Y-%m-%d"`) differ only around midnight. Templates that call this make prompts depend on the day they are
/// rendered, exactly as they do in transformers.
pub(crate) fn strftime_now(format: &str) -> String {
    let seconds = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    strftime(format, seconds)
}

const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// `strftime` over seconds since the Unix epoch (UTC, C locale). Unknown directives are copied as written.
pub(crate) fn strftime(format: &str, unix_seconds: u64) -> String {
    let days = unix_seconds / 86_400;
    let secs_of_day = unix_seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (secs_of_day / 3600, secs_of_day / 60 % 60, secs_of_day % 60);
    // 1970-01-01 was a Thursday.
    let weekday = usize::try_from((days + 4) % 7).unwrap_or(0);
    let month_idx = usize::try_from(month.saturating_sub(1)).unwrap_or(0);
    let month_name = MONTHS.get(month_idx).copied().unwrap_or("");
    let weekday_name = WEEKDAYS.get(weekday).copied().unwrap_or("");
    let day_of_year = days - days_from_civil(year, 1, 1) + 1;
    let hour12 = if hour % 12 == 0 { 12 } else { hour % 12 };

    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        // glibc's `%-d` (no padding), which Python on Linux passes through.
        let mut directive = chars.next();
        let unpadded = directive == Some('-');
        if unpadded {
            directive = chars.next();
        }
        let num = |value: u64, width: usize| {
            if unpadded {
                value.to_string()
            } else {
                format!("{value:0width$}")
            }
        };
        let text = match directive {
            Some('Y') => year.to_string(),
            Some('y') => num(year % 100, 2),
            Some('m') => num(month, 2),
            Some('d') => num(day, 2),
            Some('e') => format!("{day:2}"),
            Some('j') => num(day_of_year, 3),
            Some('H') => num(hour, 2),
            Some('I') => num(hour12, 2),
            Some('M') => num(minute, 2),
            Some('S') => num(second, 2),
            Some('p') => (if hour < 12 { "AM" } else { "PM" }).to_owned(),
            Some('B') => month_name.to_owned(),
            Some('b' | 'h') => month_name.chars().take(3).collect(),
            Some('A') => weekday_name.to_owned(),
            Some('a') => weekday_name.chars().take(3).collect(),
            Some('Z') => "UTC".to_owned(),
            Some('z') => "+0000".to_owned(),
            Some('%') => "%".to_owned(),
            Some(other) => format!("%{}{other}", if unpadded { "-" } else { "" }),
            None => "%".to_owned(),
        };
        out.push_str(&text);
    }
    out
}

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Days since 1970-01-01 of a civil date (inverse of [`civil_from_days`], for years ≥ 1970).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y % 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).saturating_sub(719_468)
}

/// Options of Python's `json.dumps` that transformers' `tojson` filter exposes.
struct JsonStyle {
    indent: Option<String>,
    item_separator: String,
    key_separator: String,
    sort_keys: bool,
    ensure_ascii: bool,
}

/// `value | tojson(ensure_ascii=False, indent=None, separators=None, sort_keys=False)`, like transformers.
pub(crate) fn tojson(value: &Value, kwargs: Kwargs) -> Result<Value, JinjaError> {
    let indent = match kwargs.get::<Option<Value>>("indent")? {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) if v.kind() == ValueKind::String => Some(v.as_str().unwrap_or_default().to_owned()),
        Some(v) => Some(" ".repeat(usize::try_from(v)?)),
    };
    let (default_item, default_key) = if indent.is_some() { (",", ": ") } else { (", ", ": ") };
    let (item_separator, key_separator) = match kwargs.get::<Option<Vec<String>>>("separators")? {
        Some(pair) => match pair.as_slice() {
            [item, key] => (item.clone(), key.clone()),
            _ => {
                return Err(JinjaError::new(
                    ErrorKind::InvalidOperation,
                    "separators must be a pair of strings",
                ));
            }
        },
        None => (default_item.to_owned(), default_key.to_owned()),
    };
    let style = JsonStyle {
        indent,
        item_separator,
        key_separator,
        sort_keys: kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false),
        ensure_ascii: kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false),
    };
    kwargs.assert_all_used()?;
    let mut out = String::new();
    write_json(value, &style, 0, &mut out)?;
    Ok(Value::from(out))
}

fn write_json(value: &Value, style: &JsonStyle, depth: usize, out: &mut String) -> Result<(), JinjaError> {
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => write_number(value, out),
        ValueKind::String => write_string(value.as_str().unwrap_or_default(), style.ensure_ascii, out),
        ValueKind::Map => {
            let mut keys: Vec<Value> = value.try_iter()?.collect();
            if style.sort_keys {
                keys.sort();
            }
            let mut entries = Vec::with_capacity(keys.len());
            for key in keys {
                let item = value.get_item(&key)?;
                entries.push((key, item));
            }
            write_container(out, style, depth, ('{', '}'), &entries, |(key, item), out| {
                match key.as_str() {
                    Some(k) => write_string(k, style.ensure_ascii, out),
                    None => write_string(&key.to_string(), style.ensure_ascii, out),
                }
                out.push_str(&style.key_separator);
                write_json(item, style, depth + 1, out)
            })?;
        }
        _ => match value.try_iter() {
            Ok(items) => {
                let items: Vec<Value> = items.collect();
                write_container(out, style, depth, ('[', ']'), &items, |item, out| {
                    write_json(item, style, depth + 1, out)
                })?;
            }
            Err(_) => write_string(&value.to_string(), style.ensure_ascii, out),
        },
    }
    Ok(())
}

/// Writes `open items close` with Python's separators and indentation.
fn write_container<T>(
    out: &mut String,
    style: &JsonStyle,
    depth: usize,
    (open, close): (char, char),
    items: &[T],
    mut write_item: impl FnMut(&T, &mut String) -> Result<(), JinjaError>,
) -> Result<(), JinjaError> {
    out.push(open);
    if items.is_empty() {
        out.push(close);
        return Ok(());
    }
    for (idx, item) in items.iter().enumerate() {
        if idx > 0 {
            out.push_str(&style.item_separator);
        }
        if let Some(indent) = &style.indent {
            out.push('\n');
            out.push_str(&indent.repeat(depth + 1));
        }
        write_item(item, out)?;
    }
    if let Some(indent) = &style.indent {
        out.push('\n');
        out.push_str(&indent.repeat(depth));
    }
    out.push(close);
    Ok(())
}

fn write_number(value: &Value, out: &mut String) {
    if let Ok(int) = i64::try_from(value.clone()) {
        let _ = write!(out, "{int}");
    } else if let Ok(float) = f64::try_from(value.clone()) {
        // Python writes NaN/Infinity (invalid JSON, but that is what transformers produces).
        if float.is_nan() {
            out.push_str("NaN");
        } else if float.is_infinite() {
            out.push_str(if float > 0.0 { "Infinity" } else { "-Infinity" });
        } else {
            out.push_str(&serde_json::to_string(&float).unwrap_or_else(|_| float.to_string()));
        }
    } else {
        out.push_str(&value.to_string());
    }
}

/// A JSON string literal, escaped as Python's `json.dumps` does.
fn write_string(text: &str, ensure_ascii: bool, out: &mut String) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0C}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 || (ensure_ascii && !c.is_ascii()) => {
                let mut units = [0_u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strftime_formats_known_dates() {
        // 2024-07-26 13:05:09 UTC, a Friday.
        let t = 1_721_999_109;
        assert_eq!(strftime("%d %b %Y", t), "26 Jul 2024");
        assert_eq!(strftime("%Y-%m-%d %H:%M:%S", t), "2024-07-26 13:05:09");
        assert_eq!(
            strftime("%A %a %B %-d %j %I%p %% %Q", t),
            "Friday Fri July 26 208 01PM % %Q"
        );
        assert_eq!(strftime("%d %b %Y", 0), "01 Jan 1970");
        assert_eq!(strftime("%Y-%m-%d", 951_782_400), "2000-02-29");
        assert_eq!(strftime("%j", 978_220_800), "366"); // 2000-12-31
    }

    #[test]
    fn tojson_matches_python_json_dumps() {
        let mut env = minijinja::Environment::new();
        env.add_filter("tojson", tojson);
        let render = |src: &str, ctx: Value| env.render_str(src, ctx).unwrap();
        let ctx: Value = [
            ("name", Value::from("get_weather")),
            (
                "tags",
                Value::from(vec![Value::from(1), Value::from(2.5), Value::from(true)]),
            ),
            ("note", Value::from("<b>\"café\"</b>\n")),
            ("none", Value::from(())),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            render("{{ x | tojson }}", minijinja::context! { x => ctx.clone() }),
            r#"{"name": "get_weather", "none": null, "note": "<b>\"café\"</b>\n", "tags": [1, 2.5, true]}"#
        );
        assert_eq!(
            render(
                "{{ x | tojson(indent=2) }}",
                minijinja::context! { x => Value::from(vec![1, 2]) }
            ),
            "[\n  1,\n  2\n]"
        );
        assert_eq!(
            render(
                "{{ x | tojson(ensure_ascii=true) }}",
                minijinja::context! { x => "é😀" }
            ),
            r#""\u00e9\ud83d\ude00""#
        );
        assert_eq!(
            render(
                "{{ x | tojson(separators=[',', ':']) }}",
                minijinja::context! { x => vec![1, 2] }
            ),
            "[1,2]"
        );
        assert_eq!(
            render("{{ x | tojson }}", minijinja::context! { x => Vec::<i32>::new() }),
            "[]"
        );
    }
}
