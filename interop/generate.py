"""Generate a Python client with openapi-generator (generator `python`), never skipping validation.

    python interop/generate.py SPEC OUTDIR PACKAGE

The generator is OPENAPI_GENERATOR_CLI (a command, split on spaces) or `openapi-generator-cli`
(pip package openapi-generator-cli, which needs a Java runtime) beside this Python or on PATH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


def generator_command() -> list[str]:
    if os.environ.get("OPENAPI_GENERATOR_CLI"):
        return os.environ["OPENAPI_GENERATOR_CLI"].split()
    beside = Path(sys.executable).parent / "openapi-generator-cli"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("openapi-generator-cli")
    if not found:
        raise RuntimeError("openapi-generator-cli not found (pip install openapi-generator-cli)")
    return [found]


class GenerationFailed(Exception):
    def __init__(self, spec: Path, output: str):
        self.output = output
        self.summary = summarize(output)
        super().__init__(f"openapi-generator could not generate a client from {spec}:\n{self.summary}")


def summarize(output: str) -> str:
    """The lines of the generator's output that say what is wrong."""
    keep = []
    for line in output.splitlines():
        text = line.strip()
        if not text or text.startswith("at ") or "INFO" in text:
            continue
        if any(word in text for word in ("ERROR", "WARN", "Exception", "attribute", "is not", "must",
                                         "should", "unexpected", "Errors", "Warnings", "|", "-")):
            keep.append(text)
    return "\n".join(keep[:80]) or output[-4000:]


def generate(spec: Path, out: Path, package: str) -> str:
    """Generates `package` from `spec` into `out`; answers the generator's output, raises
    GenerationFailed (with the generator's own messages) when it refuses."""
    cmd = [
        *generator_command(), "generate", "-g", "python", "-i", str(spec), "-o", str(out),
        f"--additional-properties=packageName={package},projectName={package.replace('_', '-')}",
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    output = run.stdout + run.stderr
    if run.returncode != 0 or not (out / package / "__init__.py").exists():
        raise GenerationFailed(spec, output)
    return output


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        output = generate(Path(argv[1]), Path(argv[2]), argv[3])
    except GenerationFailed as exc:
        print(exc, file=sys.stderr)
        return 1
    warnings = [line for line in output.splitlines() if " WARN " in line]
    print(f"generated {argv[3]} from {argv[1]} ({len(warnings)} generator warnings)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
