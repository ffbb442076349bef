//! Expected renders come from `testdata/make_chat_cases.py`, which renders the same hand-written templates with
//! Jinja2 configured as transformers configures it.

use serde::Deserialize;

use super::*;

const CASES: &str = include_str!("testdata/chat_cases.json");

fn template_source(name: &str) -> &'static str {
    match name {
        "chatml.jinja" => include_str!("testdata/chatml.jinja"),
        "llama3.jinja" => include_str!("testdata/llama3.jinja"),
        "zephyr.jinja" => include_str!("testdata/zephyr.jinja"),
        "pycompat.jinja" => include_str!("testdata/pycompat.jinja"),
        other => panic!("unknown test template {other}"),
    }
}

#[derive(Deserialize)]
struct Case {
    template: String,
    messages: Vec<CaseMessage>,
    add_generation_prompt: bool,
    special_tokens: std::collections::BTreeMap<String, String>,
    expected: String,
}

#[derive(Deserialize)]
struct CaseMessage {
    role: String,
    content: String,
}

fn messages(pairs: &[(&str, &str)]) -> Vec<Message> {
    pairs
        .iter()
        .map(|(role, content)| Message {
            role: (*role).into(),
            content: (*content).into(),
        })
        .collect()
}

fn compile(source: &str) -> ChatTemplate {
    ChatTemplate::compile(source, Path::new("/m/chat_template.jinja")).unwrap()
}

fn render_err(source: &str, msgs: &[(&str, &str)]) -> String {
    match compile(source).render(&messages(msgs), true, &[]) {
        Err(Error::ChatTemplate(message)) => message,
        other => panic!("expected a chat template error, got {other:?}"),
    }
}

/// `special_tokens` with `'static` names, as `Tokenizer` passes them.
fn special_tokens(map: &std::collections::BTreeMap<String, String>) -> Vec<(&'static str, String)> {
    map.iter()
        .map(|(name, text)| {
            let name: &'static str = match name.as_str() {
                "bos_token" => "bos_token",
                "eos_token" => "eos_token",
                other => panic!("unexpected special token {other}"),
            };
            (name, text.clone())
        })
        .collect()
}

#[test]
fn renders_like_jinja2_with_transformers_settings() {
    let cases: Vec<Case> = serde_json::from_str(CASES).unwrap();
    assert!(cases.len() >= 8);
    for (idx, case) in cases.iter().enumerate() {
        let template = compile(template_source(&case.template));
        let msgs: Vec<Message> = case
            .messages
            .iter()
            .map(|m| Message {
                role: m.role.clone(),
                content: m.content.clone(),
            })
            .collect();
        let rendered = template
            .render(&msgs, case.add_generation_prompt, &special_tokens(&case.special_tokens))
            .unwrap_or_else(|e| panic!("case {idx} ({}): {e}", case.template));
        assert_eq!(rendered, case.expected, "case {idx} ({})", case.template);
    }
}

#[test]
fn raise_exception_surfaces_the_template_message_and_line() {
    let message = render_err(template_source("chatml.jinja"), &[("user", "hi"), ("tool", "42")]);
    assert_eq!(
        message,
        "/m/chat_template.jinja (template line 12): the template raised: Unexpected role: tool",
    );
    let displayed = Error::ChatTemplate(message).to_string();
    assert!(
        displayed.starts_with("chat template failed: /m/chat_template.jinja"),
        "{displayed}"
    );
}

#[test]
fn runtime_and_syntax_errors_are_one_line_with_the_file() {
    let message = render_err(
        "line one\n{{ messages[0].content.no_such_method() }}",
        &[("user", "hi")],
    );
    assert!(
        message.starts_with("/m/chat_template.jinja (template line 2): unknown method"),
        "{message}"
    );
    assert!(!message.contains('\n'));

    let err = ChatTemplate::compile(
        "{% for m in messages %}\n{{ m.content }",
        Path::new("/m/tokenizer_config.json"),
    )
    .unwrap_err();
    assert!(
        err.starts_with("/m/tokenizer_config.json (template line 2): the chat template does not compile: syntax error"),
        "{err}"
    );
}

#[test]
fn generation_blocks_render_as_their_content() {
    // trim_blocks eats the newline after `{% endif %}`, as Jinja2 does with transformers' settings.
    let with_tags = "{%- for m in messages %}{{ m.role }}:{%- if m.role == 'assistant' %}{% generation %}\
                     {{ m.content }}{% endgeneration %}{%- else %}{{ m.content }}{% endif %}\n{%- endfor %}";
    let msgs = messages(&[("user", "hi"), ("assistant", "hello")]);
    let rendered = compile(with_tags).render(&msgs, false, &[]).unwrap();
    assert_eq!(rendered, "user:hiassistant:hello");
    assert_eq!(
        rewrite_generation_blocks("{%- generation -%}x{%+endgeneration%}"),
        "{%- if true -%}x{%+ endif %}"
    );
}

#[test]
fn strftime_now_and_python_literals() {
    let source = "{{ strftime_now('%Y') }} {{ true }} {{ none }} {{ bos_token is defined }} {{ tools }}";
    let rendered = compile(source).render(&messages(&[("user", "x")]), true, &[]).unwrap();
    let (year, rest) = rendered.split_once(' ').unwrap();
    assert!(year.parse::<u32>().unwrap() >= 2025, "{rendered}");
    assert_eq!(rest, "True None False None");
}

/// Issue #15: a template with large nested loops rendered forever.
#[test]
fn a_template_that_loops_without_end_is_stopped_with_one_line() {
    let source = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
    let started = std::time::Instant::now();
    let err = compile(source)
        .render(&messages(&[("user", "x")]), true, &[])
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("template steps and was stopped"), "{text}");
    assert!(!text.contains('\n'), "{text}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );

    // Output grows far faster than steps here: the size bound stops it.
    let source = "{% for i in range(100000) %}{{ messages[0].content * 1000 }}{% endfor %}";
    let text = compile(source)
        .render(&messages(&[("user", "xxxxxxxxxx")]), true, &[])
        .unwrap_err()
        .to_string();
    assert!(text.contains("wrote more than") && text.contains("MiB"), "{text}");

    // A long conversation still renders: fuel grows with the messages.
    let many: Vec<(&str, &str)> = (0..500)
        .map(|i| {
            if i % 2 == 0 {
                ("user", "hi")
            } else {
                ("assistant", "ok")
            }
        })
        .collect();
    let rendered = compile(include_str!("testdata/chatml.jinja"))
        .render(&messages(&many), true, &[])
        .unwrap();
    assert_eq!(
        rendered.matches("<|im_start|>").count(),
        502,
        "a default system prompt, 500 messages and the generation prompt"
    );
}
