"""``--carbon-source``: which source a coordinator reads, by name.

- ``annual``: the annual averages shipped with the package (the default);
- ``trace`` or ``trace:FOLDER``: recorded traces replayed (the shipped 2020 ones, or a
  folder of ``ZONE-YEAR.csv[.gz]``);
- ``electricitymaps`` or ``electricitymaps:URL``: the Electricity Maps API, with the key in
  ``$ELECTRICITYMAPS_API_KEY``;
- ``carbon-aware-sdk:URL``: a Carbon Aware SDK WebAPI deployment.
"""

from __future__ import annotations

import os
from pathlib import Path

from hydracompute.carbon import IntensitySource
from hydracompute.carbon.annual import AnnualSource
from hydracompute.carbon.carbonaware import CarbonAwareSDK
from hydracompute.carbon.electricitymaps import API_KEY_VARIABLE, BASE_URL, ElectricityMaps
from hydracompute.carbon.traces import TraceSource, load_traces

NAMES = ("annual", "trace", "electricitymaps", "carbon-aware-sdk")


def make_source(spec: str, environ: dict[str, str] | None = None) -> IntensitySource:
    """The source ``spec`` names (see the module's docstring).

    Raises:
        ValueError: an unknown name, a missing URL or key, or an unreadable trace folder.
    """
    environ = dict(os.environ) if environ is None else environ
    name, _, argument = spec.partition(":")
    if name == "annual" and not argument:
        return AnnualSource()
    if name == "trace":
        return TraceSource(load_traces(Path(argument) if argument else None))
    if name == "electricitymaps":
        return ElectricityMaps(environ.get(API_KEY_VARIABLE, ""), argument or BASE_URL)
    if name == "carbon-aware-sdk":
        if not argument.startswith(("http://", "https://")):
            raise ValueError("carbon-aware-sdk needs the WebAPI's URL: carbon-aware-sdk:URL")
        return CarbonAwareSDK(argument)
    raise ValueError(f"unknown carbon source {spec!r}: one of {', '.join(NAMES)}")
