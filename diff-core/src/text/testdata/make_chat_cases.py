"""Renders the test templates with Jinja2 configured as transformers configures it; writes chat_cases.json.

transformers (`utils/chat_template_utils.py`, `_compile_jinja_template`) renders chat templates in an
ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True) with the loopcontrols extension, its own
`tojson` (json.dumps, ensure_ascii=False) and `raise_exception`, and passes messages, tools=None, documents=None,
add_generation_prompt and the special-token strings. Run with jinja2 3.1: `python3 make_chat_cases.py`.
"""

import json
from pathlib import Path

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = Path(__file__).parent


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def render(template, messages, add_generation_prompt, **special):
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    source = (HERE / template).read_text()
    return env.from_string(source).render(
        messages=messages, tools=None, documents=None, add_generation_prompt=add_generation_prompt, **special
    )


def m(role, content):
    return {"role": role, "content": content}


CASES = [
    ("chatml.jinja", [m("system", "  Answer briefly. \n"), m("user", "Hi!"),
                      m("assistant", "<think>\nhmm</think>\n\nHello."), m("user", "Bye")], {}),
    ("chatml.jinja", [m("user", "What is 2+2?")], {}),
    ("chatml.jinja", [m("user", "Say hi"), m("assistant", "Hi")], {}),
    ("llama3.jinja", [m("system", "You are terse.\n"), m("user", "  Weather in Paris? "),
                      m("assistant", "Let me check."), m("tool", "{\"temp\": \"21°C\", \"sky\": \"<clear>\"}"),
                      m("user", "Thanks")], {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}),
    ("llama3.jinja", [m("user", "Café ☕ or tea?")], {"bos_token": "<|begin_of_text|>"}),
    ("zephyr.jinja", [m("user", "Hello"), m("assistant", "Hi there"), m("user", "How are you?")],
     {"bos_token": "<s>", "eos_token": "</s>"}),
    ("zephyr.jinja", [m("user", "Hello"), m("assistant", "Hi there")], {"eos_token": "</s>"}),
    ("pycompat.jinja", [m("user", "  Hello big world!  "), m("assistant", "Fine thanks")],
     {"bos_token": "<s>", "eos_token": "</s>"}),
]


def main():
    cases = []
    for template, messages, special in CASES:
        add_generation_prompt = messages[-1]["role"] != "assistant"
        cases.append({
            "template": template,
            "messages": messages,
            "add_generation_prompt": add_generation_prompt,
            "special_tokens": special,
            "expected": render(template, messages, add_generation_prompt, **special),
        })
    (HERE / "chat_cases.json").write_text(json.dumps(cases, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
