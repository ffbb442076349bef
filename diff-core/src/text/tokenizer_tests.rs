use serde_json::json;

use super::*;
use crate::text::test_support::{SPECIALS, byte_level_tokenizer, fixture, model_dir, sentencepiece_tokenizer};

const CHATML: &str = "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}\
                      {% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

fn user(content: &str) -> PromptContent {
    PromptContent::Messages(vec![Message {
        role: "user".into(),
        content: content.into(),
    }])
}

fn text(content: &str) -> PromptContent {
    PromptContent::Text(content.into())
}

fn id_of(special: &str) -> u32 {
    u32::try_from(SPECIALS.iter().position(|s| *s == special).unwrap()).unwrap()
}

#[test]
fn tokenizer_can_be_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Tokenizer>();
}

#[test]
fn fixture_tokenizers_load_and_token_strings_round_trip() {
    for name in ["tiny-llama", "tiny-gpt2"] {
        let tok = Tokenizer::load(&fixture(name)).unwrap();
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(fixture(name).with_file_name("config.json")).unwrap())
                .unwrap();
        let embedding_rows = usize::try_from(config["vocab_size"].as_u64().unwrap()).unwrap();
        assert!(
            (259..=embedding_rows).contains(&tok.vocab_size()),
            "{name}: {}",
            tok.vocab_size()
        );
        assert!(tok.path().ends_with("base/tokenizer.json"));
        let sample = "The quick brown fox.\nIt jumps over the lazy dog, 42 times!  Done";
        let ids = tok.encode(&text(sample)).unwrap();
        let strings = tok.token_strings(&ids);
        assert_eq!(strings.len(), ids.len());
        let joined: String = strings.concat();
        assert_eq!(joined, tok.decode(&ids).unwrap(), "{name}");
        assert!(joined.ends_with(sample), "{name}: {joined:?}");
        // Whatever chat template the fixture ships (if any) must render a user turn.
        if tok.has_chat_template() {
            let ids = tok.encode(&user("Hello there")).unwrap();
            assert!(tok.decode(&ids).unwrap().contains("Hello there"), "{name}");
        }
        // A directory works as well as the file.
        let again = Tokenizer::load(fixture(name).parent().unwrap()).unwrap();
        assert_eq!(again.encode(&text(sample)).unwrap(), ids);
    }
}

#[test]
fn text_gets_special_tokens_from_the_post_processor_and_chat_does_not_double_them() {
    let config =
        json!({"bos_token": "<|bos|>", "eos_token": {"content": "<|eos|>", "special": true}, "chat_template": CHATML});
    let (_dir, path) = model_dir(&byte_level_tokenizer(true), Some(&config), None);
    let tok = Tokenizer::load(&path).unwrap();
    let ids = tok.encode(&text("Hello the")).unwrap();
    assert_eq!(tok.token_strings(&ids), ["<|bos|>", "Hello", " the"]);

    let ids = tok.encode(&user("Hello")).unwrap();
    let strings = tok.token_strings(&ids);
    assert_eq!(
        ids.iter().filter(|&&id| id == id_of("<|bos|>")).count(),
        1,
        "{strings:?}"
    );
    assert_eq!(&strings[..4], ["<|bos|>", "<|im_start|>", "u", "s"]);
    assert_eq!(
        strings.concat(),
        "<|bos|><|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"
    );

    let (_dir, path) = model_dir(&byte_level_tokenizer(false), None, None);
    let plain = Tokenizer::load(&path).unwrap();
    assert_eq!(
        plain.token_strings(&plain.encode(&text("Hello the")).unwrap()),
        ["Hello", " the"]
    );
}

#[test]
fn generation_prompt_is_added_unless_the_assistant_spoke_last() {
    let (_dir, path) = model_dir(
        &byte_level_tokenizer(false),
        Some(&json!({"chat_template": CHATML})),
        None,
    );
    let tok = Tokenizer::load(&path).unwrap();
    let turn = |role: &str, content: &str| Message {
        role: role.into(),
        content: content.into(),
    };
    assert_eq!(
        tok.render_chat(&[turn("user", "Hi")]).unwrap(),
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(
        tok.render_chat(&[turn("user", "Hi"), turn("assistant", "Yo")]).unwrap(),
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nYo<|im_end|>\n"
    );
}

#[test]
fn chat_template_sources_and_precedence() {
    let tokenizer = byte_level_tokenizer(false);
    let named = |name: &str, body: &str| json!({"name": name, "template": body});

    // A list picks "default".
    let config = json!({"chat_template": [named("tool_use", "TOOLS"), named("default", "DEFAULT")]});
    let (_dir, path) = model_dir(&tokenizer, Some(&config), None);
    let tok = Tokenizer::load(&path).unwrap();
    assert_eq!(tok.render_chat(&[]).unwrap(), "DEFAULT");
    assert_eq!(
        tok.chat_template_path(),
        Some(path.with_file_name("tokenizer_config.json").as_path())
    );

    // chat_template.jinja wins over tokenizer_config.json.
    let (_dir, path) = model_dir(&tokenizer, Some(&json!({"chat_template": "CONFIG"})), Some("JINJA\n"));
    let tok = Tokenizer::load(&path).unwrap();
    assert_eq!(tok.render_chat(&[]).unwrap(), "JINJA");
    assert_eq!(
        tok.chat_template_path(),
        Some(path.with_file_name("chat_template.jinja").as_path())
    );

    // A list without "default" loads (text still works) but cannot render.
    let config = json!({"chat_template": [named("tool_use", "T"), named("rag", "R")]});
    let (_dir, path) = model_dir(&tokenizer, Some(&config), None);
    let tok = Tokenizer::load(&path).unwrap();
    assert!(tok.has_chat_template() && tok.chat_template_path().is_none());
    assert!(tok.encode(&text("Hello")).is_ok());
    let err = tok.encode(&user("Hi")).unwrap_err().to_string();
    assert!(err.contains("(tool_use, rag) and none named \"default\""), "{err}");
}

#[test]
fn messages_without_a_usable_template_fail_clearly() {
    let (_dir, path) = model_dir(
        &byte_level_tokenizer(false),
        Some(&json!({"bos_token": "<|bos|>"})),
        None,
    );
    let tok = Tokenizer::load(&path).unwrap();
    assert!(!tok.has_chat_template());
    let err = tok.encode(&user("Hi")).unwrap_err();
    assert!(matches!(err, Error::ChatTemplate(_)));
    let err = err.to_string();
    assert!(
        err.contains("has no chat_template") && err.contains(r#"{"text": ...}"#),
        "{err}"
    );

    let (_dir, path) = model_dir(&byte_level_tokenizer(false), None, Some("{% if %}"));
    let tok = Tokenizer::load(&path).unwrap();
    assert!(tok.has_chat_template());
    assert!(tok.encode(&text("Hello")).is_ok());
    let err = tok.encode(&user("Hi")).unwrap_err().to_string();
    assert!(
        err.contains("chat_template.jinja (template line 1): the chat template does not compile"),
        "{err}"
    );
}

#[test]
fn broken_files_are_reported_with_their_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("tokenizer.json");
    assert!(matches!(Tokenizer::load(&missing), Err(Error::Read { path, .. }) if path == missing));
    std::fs::write(&missing, "{\"version\": \"1.0\"}").unwrap();
    let err = Tokenizer::load(&missing).unwrap_err();
    assert!(matches!(&err, Error::Tokenizer { path, reason } if *path == missing && reason.contains("not a valid")));

    for (config, expected) in [
        (json!("a string"), "not a JSON object"),
        (
            json!({"bos_token": 5}),
            r#""bos_token" must be a string or {"content": ...}, found 5"#,
        ),
        (
            json!({"eos_token": {"special": true}}),
            r#""eos_token" is an object without a string "content""#,
        ),
    ] {
        let (_dir, path) = model_dir(&byte_level_tokenizer(false), Some(&config), None);
        match Tokenizer::load(&path) {
            Err(Error::Tokenizer { path: p, reason }) => {
                assert!(p.ends_with("tokenizer_config.json"));
                assert!(reason.contains(expected), "{reason}");
            }
            other => panic!("expected a tokenizer error, got {other:?}"),
        }
    }
    let (dir, path) = model_dir(&byte_level_tokenizer(false), None, None);
    std::fs::write(dir.path().join("tokenizer_config.json"), "{oops").unwrap();
    assert!(
        matches!(Tokenizer::load(&path), Err(Error::Tokenizer { reason, .. }) if reason.contains("not valid JSON"))
    );
}

#[test]
fn saved_truncation_is_ignored_like_transformers() {
    let mut tokenizer = byte_level_tokenizer(false);
    tokenizer["truncation"] = json!({"direction": "Right", "max_length": 2, "strategy": "LongestFirst", "stride": 0});
    let (_dir, path) = model_dir(&tokenizer, None, None);
    let tok = Tokenizer::load(&path).unwrap();
    assert_eq!(tok.encode(&text("Hello the the")).unwrap().len(), 3);
}

#[test]
fn byte_level_tokens_show_split_characters_as_bytes() {
    let (_dir, path) = model_dir(&byte_level_tokenizer(false), None, None);
    let tok = Tokenizer::load(&path).unwrap();
    assert_eq!(tok.vocab_size(), SPECIALS.len() + 256 + 7);
    let ids = tok.encode(&text("Hello the €!\n")).unwrap();
    assert_eq!(
        tok.token_strings(&ids),
        ["Hello", " the", " ", "<0xE2>", "<0x82>", "<0xAC>", "!", "\n"]
    );
    assert_eq!(tok.decode(&ids).unwrap(), "Hello the €!\n");
    assert_eq!(
        tok.token_strings(&[id_of("<|im_end|>"), 99_999]),
        ["<|im_end|>", "<unknown id 99999>"]
    );
}

#[test]
fn sentencepiece_tokens_keep_their_leading_space_and_bytes() {
    let (_dir, path) = model_dir(&sentencepiece_tokenizer(), None, None);
    let tok = Tokenizer::load(&path).unwrap();
    let ids = tok.encode(&text("the é\n")).unwrap();
    // The decoder strips the first space of a sequence; a token's own string keeps it.
    assert_eq!(tok.decode(&ids).unwrap(), "<s> the é\n");
    assert_eq!(tok.token_strings(&ids), ["<s>", " the", " ", "<0xC3>", "<0xA9>", "\n"]);
    assert_eq!(tok.token_strings(&ids[1..2]), [" the"]);
}

/// The tokens `encode_with_roles` gives `role`, as text.
fn text_of(tok: &Tokenizer, roles: &TokenRoles<'_>, role: &str) -> String {
    let ids: Vec<u32> = roles
        .ids
        .iter()
        .zip(&roles.roles)
        .filter(|(_, r)| **r == Some(role))
        .map(|(&id, _)| id)
        .collect();
    tok.token_strings(&ids).concat()
}

#[test]
fn each_token_gets_the_role_of_the_message_it_comes_from() {
    let tok = Tokenizer::load(&fixture("tiny-llama")).unwrap();
    let chat = PromptContent::Messages(vec![
        Message {
            role: "user".into(),
            content: "What is the capital of France?".into(),
        },
        Message {
            role: "assistant".into(),
            content: "Paris, of course.".into(),
        },
        Message {
            role: "user".into(),
            content: "And of Spain?".into(),
        },
    ]);
    let roles = tok.encode_with_roles(&chat).unwrap();
    assert_eq!(roles.ids, tok.encode(&chat).unwrap(), "the same ids as encode");
    assert_eq!(roles.roles.len(), roles.ids.len());
    assert!(roles.unmatched.is_empty());
    // Exactly the contents' tokens (a leading space the tokenizer glues to a word comes with it), none of the
    // template's role headers, BOS or EOS.
    assert_eq!(
        text_of(&tok, &roles, "user").trim(),
        "What is the capital of France? And of Spain?"
    );
    assert_eq!(text_of(&tok, &roles, "assistant").trim(), "Paris, of course.");
    assert_eq!(roles.roles.first(), Some(&None), "BOS is the template's");

    // A plain-text prompt is the user's, bar the BOS the post-processor adds.
    let (_dir, path) = model_dir(&sentencepiece_tokenizer(), None, None);
    let sp = Tokenizer::load(&path).unwrap();
    let prompt = text("the é\n");
    let plain = sp.encode_with_roles(&prompt).unwrap();
    assert_eq!(
        plain.roles,
        [
            None,
            Some("user"),
            Some("user"),
            Some("user"),
            Some("user"),
            Some("user")
        ]
    );
}

#[test]
fn a_message_the_template_rewrites_is_unmatched() {
    let (_dir, path) = model_dir(
        &byte_level_tokenizer(false),
        None,
        Some("{% for m in messages %}{{ m.role }}: {{ m.content | upper }}\n{% endfor %}"),
    );
    let tok = Tokenizer::load(&path).unwrap();
    let chat = PromptContent::Messages(vec![
        Message {
            role: "user".into(),
            content: "hello".into(),
        },
        Message {
            role: "assistant".into(),
            content: "HI".into(),
        },
    ]);
    let roles = tok.encode_with_roles(&chat).unwrap();
    assert_eq!(roles.unmatched, [0]);
    assert_eq!(text_of(&tok, &roles, "assistant"), "HI");
    assert!(!roles.roles.contains(&Some("user")));
}
