"""``relay demo``, ``manifest``, ``package`` and ``chaos``: the bundle as a whole."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from tooling.cli._common import EXIT_USAGE, fail, load_settings, print_json


@click.command()
@click.option("--runs", "count", default=12, show_default=True, type=click.IntRange(3, 500))
@click.option("--seed", default=7, show_default=True, help="Seed of the demo inputs.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 16))
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="A fresh directory for the demo (default: RELAY_DATA_DIR/demo-<timestamp>).",
)
@click.option("--timeout", default=45.0, show_default=True, help="Longest wait for the runs.")
def demo(count: int, seed: int, workers: int, data_dir: Path | None, timeout: float) -> None:
    """Run the order saga end to end: some orders complete, some compensate."""
    from tooling.demo import run_demo

    target = data_dir or load_settings().data_dir / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    sys.exit(run_demo(count=count, seed=seed, workers=workers, data_dir=target, timeout=timeout))


@click.command()
def manifest() -> None:
    """Print the bundle manifest (functions, sagas, queues, schedules) as JSON."""
    from core.errors import EngineError
    from core.registry import SagaRegistry
    from tooling.manifest import build_manifest

    settings = load_settings()
    try:
        # Pipelines run as sagas (one step per task), so they are listed among them.
        registry = SagaRegistry(
            dict(settings.saga_modules), pipelines=dict(settings.pipeline_modules)
        )
        built = build_manifest(registry)
    except EngineError as exc:  # a saga that does not import, an invalid definition, a clash
        fail(str(exc), code=EXIT_USAGE)
    print_json(built)


@click.command()
@click.option("--target", required=True, type=click.Choice(["gcp", "aws"]))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("dist"),
    show_default=True,
    help="Directory of the archive (and of the aws pip build).",
)
@click.option(
    "--arch",
    type=click.Choice(["x86_64", "arm64"]),
    default="x86_64",
    show_default=True,
    help="aws: the Lambda architecture whose wheels pip installs.",
)
@click.option(
    "--python-version",
    default="3.12",
    show_default=True,
    help="aws: the CPython of the Lambda runtime whose wheels pip installs.",
)
@click.option(
    "--without-boto3",
    is_flag=True,
    help="aws: leave boto3/botocore out and use the Lambda runtime's own.",
)
def package(
    *, target: str, out_dir: Path, arch: str, python_version: str, without_boto3: bool
) -> None:
    """Build the deployable archive: Cloud Run functions source (gcp) or Lambda zip (aws)."""
    from tooling.package.archive import build_package
    from tooling.package.locks import PackagingError

    try:
        built = build_package(
            "gcp" if target == "gcp" else "aws",
            out_dir,
            python_version=python_version,
            arch="arm64" if arch == "arm64" else "x86_64",
            include_boto3=not without_boto3,
        )
    except PackagingError as exc:
        from rich.markup import escape

        fail(escape(str(exc)))  # pip's messages hold brackets rich would read as markup
    click.echo(f"archive  {built.path}")
    click.echo(f"size     {built.size_bytes} bytes ({built.size_bytes / 2**20:.1f} MiB)")
    click.echo(f"entries  {built.entries}")
    click.echo(f"sha256   {built.sha256}")


@click.command()
@click.argument("saga")
@click.option("--runs", "count", required=True, type=click.IntRange(1, 100_000))
@click.option("--faults", default=None, help="RELAY_FAULTS for the stack (default per saga).")
@click.option("--kill-stack-once", is_flag=True, help="SIGKILL the whole stack mid-campaign.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 32))
@click.option("--timeout", default=600.0, show_default=True, help="Longest campaign, seconds.")
@click.option("--seed", default=7, show_default=True, help="Seed of inputs and faults.")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="A fresh directory for the campaign (default: a new temporary directory).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def chaos(
    *,
    saga: str,
    count: int,
    faults: str | None,
    kill_stack_once: bool,
    workers: int,
    timeout: float,
    seed: int,
    data_dir: Path | None,
    as_json: bool,
) -> None:
    """Drive N runs of SAGA through a faulty stack, then check every run and invariant."""
    from tooling.chaos import CampaignConfig, run_campaign

    config = CampaignConfig(
        saga=saga,
        runs=count,
        faults=faults,
        kill_stack_once=kill_stack_once,
        workers=workers,
        timeout_seconds=timeout,
        seed=seed,
        data_dir=data_dir,
    )
    sys.exit(run_campaign(config, as_json=as_json))


COMMANDS = (demo, manifest, package, chaos)
