"""The configs' keys and what they mean, read from the YAML files themselves.

Every key's one-line meaning is its YAML comment (``key: value   # meaning``, continued
on comment lines aligned with it), written once: where several choices of a group
declare the same key (``optimizer.lr`` in adam, sgd, ...), one comment serves them all;
a choice's own description is the first comment line of its file. ``apts-train --help``
(:func:`help_text`, through Hydra's help template) and the "did you mean" hints are built
from this one reading.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from apts.config.paths import CONFIG_DIR

# groups in the order the help lists them; hydra/launcher's keys live under hydra.launcher
GROUPS = ("dataset", "model", "optimizer", "launcher", "hydra/launcher", "experiment")
DEFAULTS = {"hydra/launcher": "basic"}  # Hydra's own, not a file here
BUILTIN = {"basic": "Hydra's: the jobs of a sweep one after another on this machine"}
# keys the machinery sets, not the user
INTERNAL = {"_target_", "_partial_"}

_KEY = re.compile(r"^(?P<ind> *)(?P<key>[A-Za-z_][\w]*):(?P<rest>.*)$")


@dataclass
class Key:
    """One key as the configs declare it: its dotted path, and per declaring choice (None
    for train.yaml) its default as written and its comment ("" when it has none)."""

    path: str
    values: dict[str | None, str] = field(default_factory=dict)
    comments: dict[str | None, str] = field(default_factory=dict)

    @property
    def meanings(self) -> dict[str, list[str]]:
        """Each distinct comment and the choices that carry it."""
        out: dict[str, list[str]] = {}
        for choice, text in self.comments.items():
            if text:
                out.setdefault(text, []).append(choice or "")
        if out:  # the choices without a comment of their own share the first one's
            first = next(iter(out))
            out[first] += [c or "" for c, text in self.comments.items() if not text]
            out[first].sort()
        if not out and self.is_choice_name:
            group = self.path.split(".")[0]
            out[f"the choice's name, set by {group}=<choice>"] = list(self.values)
        return out

    @property
    def is_choice_name(self) -> bool:
        return self.path in {f"{g}.name" for g in GROUPS if "/" not in g}


def _split_comment(rest: str) -> tuple[str, str, int]:
    """``value  # comment`` -> (value, comment, column of '#' in ``rest``; -1 if none)."""
    quote = None
    for i, ch in enumerate(rest):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or rest[i - 1] in " \t"):
            return rest[:i].strip(), rest[i + 1 :].strip(), i
    return rest.strip(), "", -1


def parse_file(path: Path) -> tuple[str, str, list[tuple[str, str, str]]]:
    """A config file's package line (``_global_``, ``hydra.launcher`` or ""), its own
    description (the first comment line that is not the package line) and its leaf keys
    as (dotted path relative to the package, value as written, comment)."""
    package, description = "", ""
    leaves: list[tuple[str, str, str]] = []
    stack: list[tuple[int, str]] = []  # (indent, key) of the open mappings
    last: int | None = None  # index in leaves of the key whose comment may continue
    last_col = -1
    skip_below: int | None = None  # inside `defaults:` (a list, not keys)
    header = True  # in the file's first block of comment lines
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped.startswith("#"):
            header = False
        if stripped.startswith("#"):
            text = stripped[1:].strip()
            if text.startswith("@package"):
                package = text.split(None, 1)[1]
            elif header and text:
                description = f"{description} {text}".strip()
            elif last is not None and line.index("#") == last_col and text:
                p, v, c = leaves[last]
                leaves[last] = (p, v, f"{c} {text}".strip())
            header = header and bool(text)
            continue
        last = None
        m = _KEY.match(line)
        if not m:
            continue
        indent, key = len(m["ind"]), m["key"]
        if skip_below is not None and indent > skip_below:
            continue
        skip_below = None
        while stack and stack[-1][0] >= indent:
            stack.pop()
        value, comment, col = _split_comment(m["rest"])
        if key == "defaults" and not stack:
            skip_below = indent
            continue
        if value == "":  # a mapping opens
            stack.append((indent, key))
            continue
        dotted = ".".join([k for _, k in stack] + [key])
        leaves.append((dotted, value, comment))
        last = len(leaves) - 1
        last_col = len(line) - len(m["rest"]) + col if col >= 0 else -1
    return package, _first_sentence(description), leaves


def _first_sentence(text: str) -> str:
    """Up to the first '.' or ';' that ends a clause outside parentheses ('.' for both)."""
    depth = 0
    for i, ch in enumerate(text):
        depth += (ch == "(") - (ch == ")")
        if ch in ".;" and depth == 0 and (i + 1 == len(text) or text[i + 1] == " "):
            return text[:i] + "."
    return text


def _choices(config_dir: Path, group: str) -> list[Path]:
    return sorted((config_dir / group).glob("*.yaml"))


@cache
def read_configs(config_dir: Path = CONFIG_DIR) -> tuple[dict[str, Key], dict[str, dict]]:
    """(keys by dotted path, {group: {choice: description}}) of the config tree.

    The keys are train.yaml's top-level keys (not ``hydra``) and those the group files
    declare under their package (``dataset.*``, ``optimizer.*``, ``hydra.launcher.*``...);
    a group file's top-level settings of train.yaml's keys (``batch_size`` in an
    optimizer file) and the experiment presets' settings are not declarations."""
    keys: dict[str, Key] = {}
    _, _, top = parse_file(config_dir / "train.yaml")
    for path, value, comment in top:
        if path.split(".", 1)[0] == "hydra":
            continue
        k = keys.setdefault(path, Key(path))
        k.values[None], k.comments[None] = value, comment
    groups: dict[str, dict] = {}
    for group in GROUPS:
        described = groups.setdefault(group, {})
        if group in DEFAULTS:
            described[DEFAULTS[group]] = BUILTIN[DEFAULTS[group]]
        for f in _choices(config_dir, group):
            package, description, leaves = parse_file(f)
            described[f.stem] = description
            if group == "experiment":
                continue
            prefix = "" if package == "_global_" else (package or group.replace("/", ".")) + "."
            for path, value, comment in leaves:
                full = prefix + path
                if full in keys and None in keys[full].values or path in INTERNAL:
                    continue  # a setting of a train.yaml key, or machinery
                if full.rsplit(".", 1)[-1] in INTERNAL:
                    continue
                k = keys.setdefault(full, Key(full))
                k.values[f.stem], k.comments[f.stem] = value, comment
    return keys, groups


def default_choices(config_dir: Path = CONFIG_DIR) -> dict[str, str]:
    """The group choices train.yaml's defaults list picks (plus Hydra's launcher)."""
    out = dict(DEFAULTS)
    for line in (config_dir / "train.yaml").read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\s*-\s*(?:override\s+)?([\w/]+)\s*:\s*(\w+)\s*$", line)
        if m and m[2] != "null":
            out[m[1]] = m[2]
    return out


def owners(path: str, config_dir: Path = CONFIG_DIR) -> list[str]:
    """The choices of the group that declare the key ``path`` (``optimizer.lr`` ->
    adam, local_adam, ...); empty for a top-level or unknown key."""
    k = read_configs(config_dir)[0].get(path)
    return sorted(c for c in k.values if c) if k else []


# ----------------------------------------------------------------------------- help

WIDTH = 100
EXAMPLES = (
    ("apts-train experiment=smoke", "a seconds-long check: synthetic data, 2 ranks, 2 epochs"),
    (
        "apts-train dataset=fashion_mnist model=fcnn optimizer=apts subdomains=2 epochs=20",
        "APTS on 2 subdomains at the paper's settings (|B| = 10000, 5% overlap), no lr",
    ),
    (
        "apts-train -m optimizer=adam optimizer.lr=1e-3,3e-3,1e-2 seed=0,1,2",
        "a sweep: 9 runs, each in outputs/multirun/<time>_<id>/<num>_<overrides>/",
    ),
    (
        "apts-train resume=outputs/runs/<run> epochs=40",
        "continue a stopped run from its last checkpoint, and train it longer",
    ),
    ("apts-train optimizer=apts subdomains=4 --cfg job", "print the composed config, run nothing"),
)


def _wrap(head: str, text: str, col: int) -> list[str]:
    """``head`` padded to ``col``, then ``text`` wrapped under it."""
    head = f"  {head}"
    lines = []
    if len(head) >= col - 1:  # the head on its own line, the text under it
        lines, head = [head], ""
    wrapped = textwrap.wrap(
        text,
        WIDTH,
        initial_indent=head.ljust(col),
        subsequent_indent=" " * col,
        break_on_hyphens=False,
        break_long_words=False,
    )
    return lines + (wrapped or ([head] if head else []))


def _key_lines(k: Key, col: int, n_choices: int) -> list[str]:
    """``path=default`` and its meaning(s); the choices that declare it when not all of
    the group's do; the default per choice when they differ."""
    values = dict(k.values)
    if k.is_choice_name:
        values = {c: f"<{k.path.split('.')[0]}>" for c in values}
    declared = sorted(c for c in values if c)
    same = len(set(values.values())) == 1
    head = f"{k.path}={next(iter(values.values()))}" if same else k.path
    which = f" [{', '.join(declared)}]" if declared and len(declared) < n_choices else ""
    lines: list[str] = []
    meanings = k.meanings
    for text, choices in meanings.items():
        where = f"[{', '.join(choices)}] " if len(meanings) > 1 else ""
        lines += _wrap("" if lines else head, where + text + ("" if where else which), col)
    if not same:
        per = ", ".join(f"{c} {values[c]}" for c in declared)
        lines += _wrap("", f"(default: {per})", col)
    return lines or [f"  {head}"]


def help_text(config_dir: Path = CONFIG_DIR) -> str:
    """The body of ``apts-train --help``: groups and their choices, every key with its
    meaning and default, and examples."""
    keys, groups = read_configs(config_dir)
    chosen = default_choices(config_dir)
    out = [
        "apts-train: train a network with APTS (data-parallel trust region, no learning rate)",
        "or what you would use instead (data-parallel Adam or SGD, local Adam/SGD, DiLoCo,",
        "Prodigy, schedule-free AdamW) on N processes; one run, or a sweep with -m.",
        "Arguments are Hydra overrides: group=choice and key=value.",
        "",
        "== Config groups (group=choice; * the default) ==",
    ]
    col = 24
    for group, choices in groups.items():
        out.append(f"{group}:")
        for choice, description in choices.items():
            mark = "*" if chosen.get(group) == choice else " "
            out += _wrap(f"{mark}{choice}", description, col)
    out += ["", "== Keys (key=value; [the choices that declare it], when not all do) =="]
    col = 34
    order = {g.replace("/", "."): i for i, g in enumerate(GROUPS)}
    for k in sorted(keys.values(), key=lambda k: _section(k.path, order)):
        group = next((g for g in GROUPS if k.path.startswith(g.replace("/", ".") + ".")), "")
        out += _key_lines(k, col, len([c for c in groups.get(group, {}) if c not in BUILTIN]))
    out += ["", "== Examples =="]
    for cmd, what in EXAMPLES:
        out += [f"  {cmd}", f"      {what}"]
    out += [
        "",
        "Run files (metrics.jsonl, summary.json, tb/): README, Outputs. "
        "Hydra's own flags: apts-train --hydra-help",
    ]
    return "\n".join(out)


def _section(path: str, order: dict[str, int]) -> tuple:
    for prefix, i in order.items():
        if path.startswith(prefix + "."):
            return (1 + i, path)
    return (0, "")  # top-level keys first, in train.yaml's order (sort is stable)


def help_template() -> str:
    """``hydra.help.template`` (configs/train.yaml: ``${apts_help:}``): the help text with
    string.Template's ``$`` escaped (Hydra substitutes ``$FLAGS_HELP`` and co. in it)."""
    return help_text().replace("$", "$$")


# --------------------------------------------------------------------- suggestions


def did_you_mean(name: str, known: list[str]) -> str:
    """``" (did you mean 'epochs'?)"`` for the closest known names (difflib), else ""."""
    import difflib

    close = difflib.get_close_matches(name, known, n=2, cutoff=0.6)
    if not close:  # a group key with a wrong tail: compare the last parts
        group, _, leaf = name.rpartition(".")
        tails = [k.rpartition(".")[2] for k in known if k.rpartition(".")[0] == group]
        close = [f"{group}.{t}" for t in difflib.get_close_matches(leaf, tails, n=2, cutoff=0.6)]
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def unknown_key(key: str, chosen: dict[str, str] | None = None) -> str:
    """The one-line error for a config key nobody declares, or one that belongs to another
    choice of its group than the chosen one (``optimizer.lr`` with ``optimizer=apts``)."""
    keys, _ = read_configs()
    group = next((g for g in GROUPS if key.startswith(g.replace("/", ".") + ".")), None)
    if key in keys and group is not None:
        choice = (chosen or {}).get(group)
        meaning = next(iter(keys[key].meanings), "")
        what = f"{key} is not an option of {group}={choice}" if choice else f"{key}"
        return (
            what
            + (f" ({meaning})" if meaning else "")
            + f"; it belongs to {group}={', '.join(owners(key))}"
        )
    hint = did_you_mean(key, sorted(keys))
    return f"unknown config key '{key}'{hint}; `apts-train --help` lists every key"


def unknown_choice(group: str, value: str, valid: list[str]) -> str:
    """The one-line error for an unknown choice of a config group."""
    return (
        f"unknown {group} '{value}'{did_you_mean(value, valid)}; choose one of: {', '.join(valid)}"
    )
