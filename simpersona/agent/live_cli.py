"""`simpersona simulate --url`: persona agents on any store (docs/agents.md, "Your store")."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

from simpersona.agent.live import GOALS, LiveConfig, LiveReport, draw_labels, simulate_live
from simpersona.agent.policy import Persona


def _current_artifact(data_dir: Path, name: str) -> Path | None:
    from simpersona.artifacts import current_folder

    return current_folder(data_dir / "artifacts", name)


def token_shares(
    data_dir: Path, warehouse: Path | None, shop: str | None, tokens: str | None, model: Any
) -> tuple[dict[str, float], str]:
    """The persona labels to draw from and where they came from: --tokens, else the shop's
    p̂_s (its buyers' tokens in the warehouse), else the Markov model's label shares."""
    import polars as pl

    if tokens:
        labels = [t.strip() for t in tokens.split(",") if t.strip()]
        bad = [t for t in labels if not t.isdigit()]
        if bad:
            raise typer.BadParameter(f"--tokens takes token numbers, got {', '.join(bad)}")
        return {t: 1.0 for t in labels}, "--tokens"
    if shop:
        wh = Path(warehouse) if warehouse else data_dir / "warehouse"
        path = wh / "persona_assignments" / f"shop={shop}" / "data.parquet"
        if not path.exists():
            raise typer.BadParameter(
                f"no persona assignments for shop {shop!r} at {path}: run `simpersona run` "
                "first, or give --tokens"
            )
        counts = pl.read_parquet(path, columns=["token"])["token"].cast(pl.String).value_counts()
        total = counts["count"].sum()
        shares = dict(zip(counts["token"], (c / total for c in counts["count"]), strict=True))
        return shares, f"p̂_s of shop {shop} ({total} buyers)"
    if model is not None and model.label_shares:
        return dict(model.label_shares), "the Markov policy's training buyers"
    raise typer.BadParameter("give --tokens or --shop: which personas should shop?")


@contextlib.contextmanager
def llm_policy(data_dir: Path, llm_model: Path | None, llm_url: str | None, conc: int) -> Iterator[Any]:  # fmt: skip
    """The persona LLM policy: `llm_url`'s endpoint, else the `llm_model` folder (default
    the data dir's current persona_model) served on loopback while the block runs."""
    from simpersona.agent.llm_policy import served_llm_policy

    if llm_url:
        base, name = llm_url.rstrip("/").removesuffix("/v1"), ""
        server: contextlib.AbstractContextManager[str] = contextlib.nullcontext(base)
    else:
        folder = llm_model or _current_artifact(data_dir, "persona_model")
        if folder is None or not Path(folder).exists():
            raise typer.BadParameter(
                "no persona model: pass --llm-model <folder> or --llm-url, or train one "
                "(`make demo`, or the persona_model asset)"
            )
        from simpersona.llm.server import serve_in_background

        server, name = serve_in_background(folder), Path(folder).name
    with server as base_url:
        # Guided decoding with each page's action schema, as population_simulation runs it.
        yield served_llm_policy(base_url, name or "persona-model", conc)


def simulate_url(
    *,
    url: str,
    shop: str | None,
    sessions: int,
    data_dir: Path,
    warehouse: Path | None,
    model: Path | None,
    policy: str,
    tokens: str | None,
    goal: str,
    allow_orders: bool,
    order_hosts: tuple[str, ...],
    allow_hosts: tuple[str, ...],
    site_profiles: tuple[Path, ...],
    robots: str,
    max_rps: float,
    llm_model: Path | None,
    llm_url: str | None,
    concurrency: int,
    max_steps: int,
    timeout_s: float,
    seed: int,
    out: Path | None,
    events_lake: Path | None,
    traces_out: Path | None = None,
    trace_steps: int = 16,
) -> LiveReport:
    """Resolve the options, run the sessions with a progress bar, print and save the summary."""
    from rich.console import Console
    from rich.table import Table

    from simpersona.agent.browser import BrowserUnavailable
    from simpersona.agent.markov import MarkovModel
    from simpersona.agent.markov_policy import MarkovPolicy
    from simpersona.agent.site_profile import ProfileError, load_profile
    from simpersona.progress import progress_bar

    console = Console(stderr=True)
    if policy not in ("markov", "llm"):
        raise typer.BadParameter(f"--policy must be markov or llm, got {policy!r}")
    goal_texts: tuple[str, ...] = ()
    if traces_out is not None:
        from simpersona.traces.store import TRAINING_GOALS

        goal_texts = TRAINING_GOALS.get(goal, ())
    try:
        profiles = tuple(load_profile(p) for p in site_profiles)
        run_id = format(int(time.time() * 1000), "x")
        cfg = LiveConfig(
            url=url,
            n_sessions=sessions,
            concurrency=concurrency,
            seed=seed,
            goal=goal,
            goal_texts=goal_texts,
            run_id=run_id,
            allowed_hosts=allow_hosts,
            allow_orders=allow_orders,
            order_hosts=order_hosts,
            profiles=profiles,
            robots=robots,
            max_requests_per_s=max_rps,
            max_steps=max_steps,
            session_timeout_s=timeout_s,
        )
    except (ProfileError, ValueError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    markov = None
    model_path = model or (
        (_current_artifact(data_dir, "markov_policy") or Path("/nonexistent")) / "markov.json"
    )
    if model_path.exists():
        markov = MarkovModel.load(model_path)
    elif policy == "markov":
        console.print(
            "[red]error:[/] no Markov policy: pass --model <markov.json> or materialize "
            "markov_policy (`make demo`)"
        )
        raise typer.Exit(2)
    shares, source = token_shares(data_dir, warehouse, shop, tokens, markov)
    labels = draw_labels(shares, sessions, seed)
    personas = [
        markov.persona(lab, seed=seed * 1_000_003 + i) if markov is not None
        else Persona(label=lab, attributes={"token": lab})
        for i, lab in enumerate(labels)
    ]  # fmt: skip
    if policy == "llm":
        personas = [
            Persona(p.label, p.description, p.interests, {**p.attributes, "token": p.label})
            for p in personas
        ]
    out_dir = out or data_dir / "simulations" / f"{cfg.events_shop_id}-{run_id}"
    console.print(
        f"{sessions} {policy} agents on {url} (goal: {goal}; personas: {source}); orders "
        + (f"allowed on {', '.join(order_hosts)}" if allow_orders else "NOT allowed (guarded)")
    )
    with progress_bar(sessions, "sessions", console=console) as bar:
        try:
            with contextlib.ExitStack() as stack:
                if policy == "llm":
                    agent = stack.enter_context(
                        llm_policy(data_dir, llm_model, llm_url, concurrency)
                    )
                else:
                    assert markov is not None  # checked above: the markov policy needs one
                    agent = MarkovPolicy(markov, seed=seed, follow_goal=True)
                report = simulate_live(
                    cfg, agent, personas, out_dir, events_lake,
                    on_done=lambda _r: bar.advance(),
                )  # fmt: skip
        except BrowserUnavailable as exc:
            console.print(f"[red]error:[/] {exc}")
            raise typer.Exit(1) from exc
    summary = report.summary() | {"policy": policy, "goal": goal, "personas": source,
                                  "run_id": run_id, "seed": seed}  # fmt: skip
    summary["events_lake"] = str(events_lake or out_dir / "lake")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    table = Table("figure", "value", title=f"{policy} agents on {url}")
    for k, v in summary.items():
        table.add_row(k, json.dumps(v) if isinstance(v, dict | list) else str(v))
    console.print(table)
    for r in report.results:
        if r.guard:
            console.print(f"guard: {r.key}: {r.message}")
    if traces_out is not None:
        write_traces(report, goal, traces_out, trace_steps, console)
    console.print(f"summary: {out_dir / 'summary.json'}")
    return report


def write_traces(report: LiveReport, goal: str, folder: Path, max_steps: int, console: Any) -> dict[str, Any]:  # fmt: skip
    """The report's sessions as training traces in `folder`: every session's record
    (records.jsonl), the kept ones' stage-1 and stage-2 SFT examples, and a summary."""
    from simpersona.traces.build import write_records
    from simpersona.traces.dataset import build_dataset
    from simpersona.traces.store import trace_records

    records = trace_records(report, goal, max_steps)
    folder.mkdir(parents=True, exist_ok=True)
    write_records(records, folder / "records.jsonl")
    kept = sum(r["keep"] for r in records)
    stats = {
        stage: build_dataset(records, stage, folder / f"{stage}.jsonl", max_sessions=kept)
        for stage in ("stage1", "stage2")
    }
    summary = {
        "url": report.url,
        "goal": goal,
        "sessions": len(records),
        "kept": kept,
        "max_steps": max_steps,
        **{f"{s}_examples": st.examples for s, st in stats.items()},
        "tokens_in_use": len(stats["stage2"].sessions_by_token),
    }
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    console.print(
        f"traces: {kept} of {len(records)} sessions kept (reached the goal's step), "
        f"{summary['stage2_examples']} stage-2 examples -> {folder}"
    )
    return summary


__all__ = ["GOALS", "simulate_url", "token_shares"]
