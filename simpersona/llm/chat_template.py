"""A tokenizer's own chat format, with `{% generation %}` markers around what the assistant
writes, so assistant-only loss (TRL's `assistant_only_loss`, transformers'
`return_assistant_tokens_mask`) covers the reply and its end-of-turn token (trl#3586,
trl#5988) — without swapping the model's format for another (docs/llm.md, "Any base").

    template = with_generation_markers(tokenizer)   # the same text, markers added

A template that already has markers is kept. Otherwise the format is read off the
tokenizer's template by rendering probe conversations (what goes before and after each
role's content, any default system turn, the generation prompt), a template with markers is
written from those pieces, and it must render every probe byte for byte as the original
does: a format this reading cannot reproduce (one that rewrites the content, drops turns or
thinks in tags) is refused with an error naming the difference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# Probe texts: characters no template escapes or strips.
_S, _U1, _A1, _U2, _A2 = "SYSPROBE7", "USERPROBE1", "ASSTPROBE1", "USERPROBE2", "ASSTPROBE2"


def has_generation_markers(template: str | None) -> bool:
    if not template:
        return False
    return "generation" in template and "endgeneration" in template


@dataclass(frozen=True)
class TurnFormat:
    """What a template writes around each turn's content."""

    default_system: str  # the turn added when the conversation has no system turn ("" if none)
    system: tuple[str, str]  # (before, after) the system content
    user: tuple[str, str]
    assistant: tuple[str, str, str]  # (before, end of turn, after): the end goes in the loss
    generation_prompt: str


class TemplateError(ValueError):
    """The tokenizer's chat template cannot be given generation markers faithfully."""


def _render(tok: Any, template: str, messages: Sequence[dict], gen: bool = False) -> str:
    return tok.apply_chat_template(
        list(messages), chat_template=template, tokenize=False, add_generation_prompt=gen
    )


def _between(text: str, a: str, b: str) -> str:
    i, j = text.index(a) + len(a), text.index(b)
    if j < i:
        raise TemplateError(f"the template writes {b!r} before {a!r}")
    return text[i:j]


def read_format(tok: Any, template: str, end_of_turn: str) -> TurnFormat:
    """The turn format of `template` (see the module docstring); `end_of_turn` is the text of
    the token that ends an assistant turn (the tokenizer's eos)."""
    u = [{"role": "user", "content": _U1}]
    ua = [*u, {"role": "assistant", "content": _A1}]
    uaua = [*ua, {"role": "user", "content": _U2}, {"role": "assistant", "content": _A2}]
    sua = [{"role": "system", "content": _S}, *ua]
    try:
        t_uaua, t_sua, t_u = _render(tok, template, uaua), _render(tok, template, sua), \
            _render(tok, template, u)  # fmt: skip
        t_u_gen = _render(tok, template, u, gen=True)
    except Exception as exc:  # a template that refuses plain user/assistant turns
        raise TemplateError(f"the chat template does not render plain turns: {exc}") from exc
    gen_prompt = t_u_gen[len(t_u) :] if t_u_gen.startswith(t_u) else None
    if not gen_prompt:
        raise TemplateError("the template's generation prompt does not extend the prompt")
    a_after = t_uaua[t_uaua.index(_A2) + len(_A2) :]  # end of turn + what follows it
    cut = a_after.find(end_of_turn)
    if cut < 0:
        raise TemplateError(f"an assistant turn does not end with {end_of_turn!r}")
    a_end, a_tail = a_after[: cut + len(end_of_turn)], a_after[cut + len(end_of_turn) :]
    a_suffix = a_end + a_tail
    u_to_a = _between(t_uaua, _U2, _A2)  # user's after + assistant's before
    if not u_to_a.endswith(gen_prompt):
        raise TemplateError("the assistant's turn does not start with the generation prompt")
    a_before, u_after = gen_prompt, u_to_a[: -len(gen_prompt)]
    a_to_u = _between(t_uaua, _A1, _U2)
    if not a_to_u.startswith(a_suffix):
        raise TemplateError("assistant turns end differently mid-conversation and last")
    u_before = a_to_u[len(a_suffix) :]
    head = t_uaua[: t_uaua.index(_U1)]
    if not head.endswith(u_before):
        raise TemplateError("the first user turn starts differently from the second")
    default_system = head[: -len(u_before)] if u_before else head
    s_before = t_sua[: t_sua.index(_S)]
    s_after = _between(t_sua, _S, _U1)
    if not s_after.endswith(u_before):
        raise TemplateError("the user turn after a system turn starts differently")
    s_after = s_after[: -len(u_before)] if u_before else s_after
    return TurnFormat(
        default_system, (s_before, s_after), (u_before, u_after), (a_before, a_end, a_tail),
        gen_prompt,
    )  # fmt: skip


def _lit(s: str) -> str:
    """A Jinja string literal."""
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def format_template(f: TurnFormat) -> str:
    """A template writing `f`, the assistant's content and end of turn inside
    `{% generation %}`."""
    (sb, sa), (ub, ua), (ab, ae, at) = f.system, f.user, f.assistant
    parts = []
    if f.default_system:
        parts.append(
            "{%- if not messages or messages[0]['role'] != 'system' %}"
            f"{{{{- {_lit(f.default_system)} }}}}{{%- endif %}}"
        )
    parts += [
        "{%- for message in messages %}",
        "{%- if message['role'] == 'system' %}"
        f"{{{{- {_lit(sb)} + message['content'] + {_lit(sa)} }}}}",
        "{%- elif message['role'] == 'user' %}"
        f"{{{{- {_lit(ub)} + message['content'] + {_lit(ua)} }}}}",
        "{%- elif message['role'] == 'assistant' %}"
        f"{{{{- {_lit(ab)} }}}}{{%- generation %}}{{{{- message['content'] + {_lit(ae)} }}}}"
        f"{{%- endgeneration %}}{{{{- {_lit(at)} }}}}",
        "{%- endif %}",
        "{%- endfor %}",
        f"{{%- if add_generation_prompt %}}{{{{- {_lit(f.generation_prompt)} }}}}{{%- endif %}}",
    ]
    return "".join(parts)


def probe_conversations() -> list[tuple[list[dict], bool]]:
    """Conversations (and whether to add the generation prompt) a faithful rewrite must
    render exactly as the original: the shapes SFT examples and the live policy use."""
    sys_ = {"role": "system", "content": "You shop.\nRules: one action."}
    user = {"role": "user", "content": 'Goal: buy "socks".\n\nPage: home'}
    asst = {"role": "assistant", "content": '{"action": "click", "id": "p-1"}'}
    return [
        ([sys_, user, asst], False),
        ([sys_, user], True),
        ([user, asst], False),
        ([user], True),
        ([sys_, user, asst, user, asst], False),
    ]


def with_generation_markers(
    tok: Any, template: str | None = None, extra: Sequence[Sequence[dict]] = ()
) -> str:
    """The tokenizer's chat template (or `template`) with generation markers (see the module
    docstring). `extra`: more conversations to check byte for byte (e.g. the dataset's)."""
    template = template if template is not None else tok.chat_template
    if not template:
        raise TemplateError("the tokenizer has no chat template to add generation markers to")
    if has_generation_markers(template):
        return template
    eos = tok.eos_token
    if not eos:
        raise TemplateError("the tokenizer has no eos token to end an assistant turn with")
    marked = format_template(read_format(tok, template, eos))
    checks = [*probe_conversations(), *((list(c), False) for c in extra)]
    for messages, gen in checks:
        want, got = _render(tok, template, messages, gen), _render(tok, marked, messages, gen)
        if want != got:
            i = next((k for k, (a, b) in enumerate(zip(want, got, strict=False)) if a != b),
                     min(len(want), len(got)))  # fmt: skip
            raise TemplateError(
                "the rewritten chat template renders differently from the tokenizer's at "
                f"character {i}: {want[max(0, i - 20) : i + 20]!r} vs "
                f"{got[max(0, i - 20) : i + 20]!r}; give a template with {{% generation %}} "
                "markers instead"
            )
    return marked
