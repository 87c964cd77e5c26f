"""The ``perpflow`` command line (console script ``perpflow``, or ``python -m perpflow.cli``).

``perpflow config check [--profile NAME | --config FILE]`` builds the settings exactly as a flow
run does (defaults, then the profile file, then ``PERPFLOW_*`` variables), prints each effective
value with its source (``default``, ``profile <name>``, ``environment``) and secrets masked, and
exits 0 when the configuration is valid, 1 when it is not (the error names each bad field, values
hidden as in ``perpflow.settings.load_settings``), 2 on a usage error. Unknown ``PERPFLOW_*``
variables are reported as warnings on stderr (names only).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import SecretStr

from perpflow.settings import (
    URL_FIELDS,
    ConfigError,
    Settings,
    load_settings,
    mask_url,
    profile_file,
    value_sources,
)

app = typer.Typer(no_args_is_help=True, add_completion=False, help="perpflow operations.")
config_app = typer.Typer(no_args_is_help=True, help="Inspect the configuration.")
app.add_typer(config_app, name="config")


def shown_value(settings: Settings, field: str) -> str:
    """One setting for display: URLs with password and query values masked, other secrets as
    ``**********``, venues as JSON without their defaults (credentials masked), the rest as JSON."""
    value = getattr(settings, field)
    if field in URL_FIELDS and isinstance(value, SecretStr):
        return mask_url(value.get_secret_value())
    if field == "exchanges":
        dumped: Any = [venue.model_dump(mode="json", exclude_defaults=True) for venue in value]
    else:
        dumped = settings.model_dump(mode="json", include={field})[field]
    return json.dumps(dumped)


@config_app.command("check")
def check(
    profile: Annotated[
        str | None, typer.Option(help="profile name: reads config/<name>.toml (PERPFLOW_PROFILE)")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="profile file path (PERPFLOW_CONFIG); wins over --profile")
    ] = None,
) -> None:
    """Validate the effective configuration and print every value with its source."""
    if profile is not None:
        os.environ["PERPFLOW_PROFILE"] = profile
    if config is not None:
        os.environ["PERPFLOW_CONFIG"] = str(config)
    logging.basicConfig(format="warning: %(message)s", level=logging.WARNING)
    try:
        settings = load_settings()
        sources = value_sources()
        chosen = profile_file()
    except ConfigError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    where = f"{chosen.name} ({chosen.path})" if chosen else "none (defaults and environment)"
    typer.echo(f"profile: {where}")
    for field in Settings.model_fields:
        typer.echo(f"{field} = {shown_value(settings, field)}  [{sources[field]}]")
    typer.echo("configuration OK")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
