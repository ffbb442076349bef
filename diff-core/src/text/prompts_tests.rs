use std::collections::BTreeMap;

use serde_json::json;

use super::*;
use crate::text::test_support::{byte_level_tokenizer, model_dir};

fn write(name: &str, content: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, content).unwrap();
    (dir, path)
}

fn read(name: &str, content: &str) -> PromptSet {
    let (_dir, path) = write(name, content.as_bytes());
    read_prompt_file(&path).unwrap()
}

/// The (line, reason) of the `PromptFile` error reading `content` gives.
fn line_error(name: &str, content: &[u8]) -> (usize, String) {
    let (_dir, path) = write(name, content);
    match read_prompt_file(&path) {
        Err(Error::PromptFile { path: p, line, reason }) => {
            assert_eq!(p, path);
            (line, reason)
        }
        other => panic!("expected a PromptFile error, got {other:?}"),
    }
}

fn text(prompt: &Prompt) -> &str {
    match &prompt.content {
        PromptContent::Text(text) => text,
        PromptContent::Messages(m) => panic!("expected text, got {m:?}"),
    }
}

fn user(content: &str) -> Message {
    Message {
        role: "user".into(),
        content: content.into(),
    }
}

#[test]
fn txt_is_one_prompt_per_line_with_file_line_numbers() {
    let set = read("p.txt", "\u{feff}first prompt\r\n\n   \nsecond  prompt \r\n\nthird");
    let got: Vec<(usize, &str)> = set.prompts.iter().map(|p| (p.line, text(p))).collect();
    assert_eq!(got, [(1, "first prompt"), (4, "second  prompt "), (6, "third")]);
    assert!(matches!(&set.source, PromptSource::File(p) if p.ends_with("p.txt")));
    assert!(set.location(&set.prompts[1]).ends_with("p.txt:4"));

    // Unknown extensions and no extension read as text, JSON-looking lines included.
    let set = read("prompts", "{\"text\": \"literal\"}\n");
    assert_eq!(text(&set.prompts[0]), "{\"text\": \"literal\"}");
}

#[test]
fn jsonl_reads_text_and_messages_and_ignores_other_keys() {
    let content = concat!(
        "{\"text\": \"The cat sat\", \"id\": 7}\n",
        "\n",
        "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", \"content\": \"Hi\"}]}\r\n",
        "{\"text\": \"line\\nbreak\", \"group\": \"prose\", \"category\": \"x\"}\n",
    );
    for name in ["p.jsonl", "p.NDJSON"] {
        let set = read(name, content);
        assert_eq!(set.prompts.iter().map(|p| p.line).collect::<Vec<_>>(), [1, 3, 4]);
        assert_eq!(text(&set.prompts[0]), "The cat sat");
        assert_eq!(
            set.prompts[1].content,
            PromptContent::Messages(vec![
                Message {
                    role: "system".into(),
                    content: "Be brief.".into()
                },
                user("Hi")
            ])
        );
        assert_eq!(text(&set.prompts[2]), "line\nbreak");
        let groups: Vec<Option<&str>> = set.prompts.iter().map(|p| p.group.as_deref()).collect();
        assert_eq!(groups, [None, None, Some("prose")]);
    }
}

#[test]
fn jsonl_errors_name_the_line_and_what_is_expected() {
    let ok = "{\"text\": \"fine\"}\n\n";
    let cases: &[(&str, &[&str])] = &[
        (
            "{\"text\": \"unterminated}",
            &["invalid JSON", "column", r#"expected {"text""#],
        ),
        ("[\"a list\"]", &[r#"expected {"text": "...""#, r#"found ["a list"]"#]),
        (
            "\"just a string\"",
            &[r#"expected {"text""#, r#"found "just a string""#],
        ),
        (
            "{\"prompt\": \"hi\"}",
            &[r#"expected {"text""#, r#"found {"prompt":"hi"}"#],
        ),
        (
            "{\"text\": \"a\", \"messages\": []}",
            &[r#"both "text" and "messages""#],
        ),
        ("{\"text\": 42}", &[r#""text" must be a string, found 42"#]),
        (
            "{\"text\": \"a\", \"group\": 3}",
            &[r#""group" must be a non-empty string"#, "found 3"],
        ),
        (
            "{\"text\": \"a\", \"group\": \" \"}",
            &[r#""group" must be a non-empty string"#],
        ),
        ("{\"text\": \"  \"}", &[r#""text" is empty"#]),
        ("{\"messages\": []}", &[r#""messages" is empty"#]),
        (
            "{\"messages\": \"hi\"}",
            &[r#""messages" must be a list"#, r#"found "hi""#],
        ),
        ("{\"messages\": [\"hi\"]}", &["message 1:", r#"expected {"role""#]),
        (
            "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"content\": \"b\"}]}",
            &["message 2:", r#"missing "role""#],
        ),
        (
            "{\"messages\": [{\"role\": \"user\"}]}",
            &["message 1:", r#"missing "content""#],
        ),
        (
            "{\"messages\": [{\"role\": 1, \"content\": \"a\"}]}",
            &[r#""role" must be a string, found 1"#],
        ),
        (
            "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\"}]}]}",
            &["multimodal"],
        ),
    ];
    for (bad, expected) in cases {
        let (line, reason) = line_error("p.jsonl", format!("{ok}{bad}\n{ok}").as_bytes());
        assert_eq!(line, 3, "{bad}");
        for part in *expected {
            assert!(reason.contains(part), "{bad}: {reason:?} lacks {part:?}");
        }
    }
    // The whole message reads as one line: path:line: reason.
    let (_dir, path) = write("p.jsonl", b"{\"text\": 1}");
    let message = read_prompt_file(&path).unwrap_err().to_string();
    assert!(
        message.ends_with(r#"p.jsonl:1: "text" must be a string, found 1"#),
        "{message}"
    );
}

#[test]
fn json_array_reads_elements_with_their_lines() {
    let content = "[\n  {\"text\": \"one, [two]\"},\n\n  {\"messages\": [\n    {\"role\": \"user\", \"content\": \"Hi\"}\n  ]},\n  {\"text\": \"three\"}\n]\n";
    let set = read("p.json", content);
    assert_eq!(set.prompts.iter().map(|p| p.line).collect::<Vec<_>>(), [2, 4, 7]);
    assert_eq!(text(&set.prompts[0]), "one, [two]");
    assert_eq!(set.prompts[1].content, PromptContent::Messages(vec![user("Hi")]));

    let (line, reason) = line_error("p.json", b"[\n  {\"text\": \"ok\"},\n  {\"text\": 5}\n]");
    assert_eq!((line, reason.as_str()), (3, r#""text" must be a string, found 5"#));
    let (line, reason) = line_error("p.json", b"[\n  {\"text\": \"ok\"},\n  {\"text\": }\n]");
    assert_eq!(line, 3);
    assert!(reason.starts_with("invalid JSON"), "{reason}");
    let (line, reason) = line_error("p.json", b"{\"text\": \"one object\"}");
    assert_eq!(line, 1);
    assert!(
        reason.contains("one JSON array") && reason.contains(".jsonl"),
        "{reason}"
    );
}

#[test]
fn non_utf8_names_its_line() {
    let (line, reason) = line_error("p.txt", b"fine\nbad \xff byte\n");
    assert_eq!(line, 2);
    assert!(
        reason.contains("not valid UTF-8") && reason.contains("column 5"),
        "{reason}"
    );
    assert_eq!(line_error("p.jsonl", b"{\"text\": \"a\"}\n\n{\"text\": \"\xe9\"}").0, 3);
    assert_eq!(line_error("p.json", b"[\n\n{\"text\": \"\xe9\"}]").0, 3);
}

#[test]
fn empty_files_have_no_prompts_and_missing_files_cannot_be_read() {
    for (name, content) in [
        ("e.txt", ""),
        ("b.txt", "\n  \r\n\t\n"),
        ("e.jsonl", "\n\n"),
        ("e.json", " \n"),
        ("a.json", "[]"),
    ] {
        let (_dir, path) = write(name, content.as_bytes());
        assert!(
            matches!(read_prompt_file(&path), Err(Error::NoPrompts { path: p }) if p == path),
            "{name}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.txt");
    assert!(matches!(read_prompt_file(&missing), Err(Error::Read { path, .. }) if path == missing));
}

#[test]
fn builtin_set_parses_and_covers_the_categories() {
    let set = builtin_prompts();
    assert_eq!(set.source, PromptSource::BuiltIn);
    assert!(set.prompts.len() >= 60, "{} built-in prompts", set.prompts.len());
    assert!(set.prompts.iter().enumerate().all(|(idx, p)| p.line == idx + 1));
    assert_eq!(set.location(&set.prompts[0]), "built-in prompt 1");

    let mut categories = BTreeMap::<String, usize>::new();
    for prompt in &set.prompts {
        *categories.entry(prompt.group.clone().unwrap()).or_default() += 1;
    }
    for (category, min) in [
        ("chat", 6),
        ("instruction", 5),
        ("code", 6),
        ("math", 5),
        ("factual", 5),
        ("refusal", 4),
        ("multilingual", 8),
        ("prose", 5),
    ] {
        assert!(
            categories.get(category).copied().unwrap_or(0) >= min,
            "{category}: {categories:?}"
        );
    }
    let all_text: String = set.prompts.iter().map(|p| p.content.plain_text()).collect();
    let has = |range: std::ops::RangeInclusive<char>| all_text.chars().any(|c| range.contains(&c));
    for (script, range) in [
        ("CJK", '\u{4E00}'..='\u{9FFF}'),
        ("kana", '\u{3040}'..='\u{30FF}'),
        ("Cyrillic", '\u{0400}'..='\u{04FF}'),
        ("Arabic", '\u{0600}'..='\u{06FF}'),
        ("Hangul", '\u{AC00}'..='\u{D7AF}'),
    ] {
        assert!(has(range), "no {script} prompt");
    }
    let kinds = |messages: bool| {
        set.prompts
            .iter()
            .filter(|p| matches!(p.content, PromptContent::Messages(_)) == messages)
            .count()
    };
    assert!(
        kinds(true) >= 30 && kinds(false) >= 15,
        "{} chat, {} text",
        kinds(true),
        kinds(false)
    );
}

#[test]
fn builtin_chat_prompts_fall_back_to_text_without_a_chat_template_but_file_prompts_do_not() {
    let (_plain, plain_path) = model_dir(&byte_level_tokenizer(false), None, None);
    let plain = Tokenizer::load(&plain_path).unwrap();
    let (_chat, chat_path) = model_dir(
        &byte_level_tokenizer(false),
        Some(&json!({"chat_template": "{% for m in messages %}<|im_start|>{{ m.content }}<|im_end|>{% endfor %}"})),
        None,
    );
    let chat = Tokenizer::load(&chat_path).unwrap();

    let builtin = builtin_prompts();
    let resolved = builtin.clone().resolve_for(&plain);
    assert!(
        resolved
            .prompts
            .iter()
            .all(|p| matches!(p.content, PromptContent::Text(_)))
    );
    let multi_turn = builtin
        .prompts
        .iter()
        .position(|p| matches!(&p.content, PromptContent::Messages(m) if m.len() > 2))
        .unwrap();
    let PromptContent::Messages(messages) = &builtin.prompts[multi_turn].content else {
        unreachable!()
    };
    let users: Vec<&str> = messages
        .iter()
        .filter(|m| m.role == "user")
        .map(|m| m.content.as_str())
        .collect();
    assert_eq!(
        resolved.prompts[multi_turn].content,
        PromptContent::Text(users.join("\n\n"))
    );
    assert_eq!(builtin.clone().resolve_for(&chat), builtin);
    assert_eq!(builtin.encode_all(&plain).unwrap().len(), builtin.prompts.len());

    let file = read(
        "p.jsonl",
        "{\"text\": \"Hello\"}\n{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}]}\n",
    );
    assert_eq!(file.clone().resolve_for(&plain), file);
    let err = file.encode_all(&plain).unwrap_err().to_string();
    assert!(
        err.contains("p.jsonl:2: ") && err.contains("no chat_template") && err.contains("{\"text\": ...}"),
        "{err}"
    );
    let ids = file.encode_all(&chat).unwrap();
    assert_eq!(ids[1].first(), Some(&2), "<|im_start|> is a single added token");
}

#[test]
fn the_set_hash_follows_contents_and_groups_not_where_the_file_is() {
    let a = read(
        "a.jsonl",
        "{\"text\": \"one\", \"group\": \"g\"}\n{\"text\": \"two\"}\n",
    );
    let same_elsewhere = read(
        "b.jsonl",
        "\n{\"text\": \"one\", \"group\": \"g\"}\n\n{\"text\": \"two\"}\n",
    );
    assert_eq!(
        a.sha256(),
        same_elsewhere.sha256(),
        "paths and line numbers are left out"
    );
    assert_eq!(a.sha256().len(), 64);
    for other in [
        "{\"text\": \"one\"}\n{\"text\": \"two\"}\n",
        "{\"text\": \"one\", \"group\": \"h\"}\n{\"text\": \"two\"}\n",
        "{\"text\": \"two\"}\n{\"text\": \"one\", \"group\": \"g\"}\n",
        "{\"text\": \"on\", \"group\": \"g\"}\n{\"text\": \"etwo\"}\n",
        "{\"messages\": [{\"role\": \"user\", \"content\": \"one\"}], \"group\": \"g\"}\n{\"text\": \"two\"}\n",
    ] {
        assert_ne!(a.sha256(), read("c.jsonl", other).sha256(), "{other}");
    }
}

/// Issue #15: a `.csv` was read line by line, its header as a prompt.
#[test]
fn csv_and_tsv_read_a_text_column_with_ids_and_groups() {
    let set = read(
        "p.csv",
        "\u{feff}id,group,text,label\r\nq1,chat,\"Hello, world\",x\nq2,,\"two\nlines, \"\"quoted\"\"\",y\n3,code,plain,z\n",
    );
    let got: Vec<(usize, &str, Option<&str>, Option<&str>)> = set
        .prompts
        .iter()
        .map(|p| (p.line, text(p), p.id.as_deref(), p.group.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            (2, "Hello, world", Some("q1"), Some("chat")),
            (3, "two\nlines, \"quoted\"", Some("q2"), None),
            (5, "plain", Some("3"), Some("code")),
        ]
    );
    let set = read("p.TSV", "TEXT\tid\nfirst, with a comma\ta\nsecond\tb\n");
    let got: Vec<(&str, Option<&str>)> = set.prompts.iter().map(|p| (text(p), p.id.as_deref())).collect();
    assert_eq!(got, [("first, with a comma", Some("a")), ("second", Some("b"))]);
}

#[test]
fn csv_without_a_text_column_is_refused_with_the_reason() {
    let (line, reason) = line_error("p.csv", b"prompt,id\nhello,1\n");
    assert_eq!(line, 1);
    assert!(
        reason.contains(r#"no "text" column (found "prompt", "id")"#),
        "{reason}"
    );
    let (_, reason) = line_error("p.csv", b"messages\n\"[]\"\n");
    assert!(
        reason.contains(r#"a "messages" column is not read from a table"#) && reason.contains(".jsonl"),
        "{reason}"
    );
    let (line, reason) = line_error("p.csv", b"text,id\nfine,1\ntoo,many,cells\n");
    assert_eq!(line, 3);
    assert!(reason.contains("3 cells and the header 2"), "{reason}");
    let (line, reason) = line_error("p.csv", b"text\nfine\n\" \"\n");
    assert_eq!((line, reason.as_str()), (3, r#"the "text" cell is empty"#));
    let (_, reason) = line_error("p.csv", b"text\n\xff\xfe\n");
    assert!(reason.contains("UTF-8"), "{reason}");
    let (_dir, path) = write("p.csv", b"text,id\n");
    assert!(matches!(read_prompt_file(&path), Err(Error::NoPrompts { .. })));
}

#[test]
fn json_ids_are_kept_as_written() {
    let set = read(
        "p.jsonl",
        "{\"text\": \"a\", \"id\": \"intro-1\"}\n{\"text\": \"b\", \"id\": 7}\n{\"text\": \"c\"}\n",
    );
    let ids: Vec<Option<&str>> = set.prompts.iter().map(|p| p.id.as_deref()).collect();
    assert_eq!(ids, [Some("intro-1"), Some("7"), None]);
    let set = read("p.json", "[{\"text\": \"a\", \"id\": 1.5}]");
    assert_eq!(set.prompts[0].id.as_deref(), Some("1.5"));
    let (_, reason) = line_error("p.jsonl", b"{\"text\": \"a\", \"id\": [1]}\n");
    assert!(
        reason.contains(r#""id" must be a non-empty string or a number, found [1]"#),
        "{reason}"
    );
}
