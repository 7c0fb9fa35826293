"""Central shares the wire definitions with the lanes and nothing else of the agent."""

from __future__ import annotations

import ast
from pathlib import Path

CENTRAL = Path(__file__).resolve().parents[2] / "central"
ALLOWED = ("agent.wire.topics", "agent.wire.schema")


def imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def test_central_imports_only_the_wire_definitions_of_the_agent() -> None:
    offending = {
        f"{path.relative_to(CENTRAL.parent)}: {module}"
        for path in CENTRAL.rglob("*.py")
        for module in imported_modules(path)
        if (module == "agent" or module.startswith("agent."))
        and not any(module == allowed or module.startswith(allowed + ".") for allowed in ALLOWED)
        and module not in {"agent.wire"}
    }
    assert not offending, sorted(offending)
