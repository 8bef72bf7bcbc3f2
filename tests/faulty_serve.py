"""``python -m faulty_serve serve ...``: suffixspec's CLI whose engines draft with a proposer that
fails (at its second ``extend``) for every request whose prompt starts with :data:`POISON`, so
that the server tests can fail one request of a real server process (tests/test_server_failures.py).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import suffixspec.engine.engine as engine_module
from suffixspec.cli import main
from suffixspec.proposer import SuffixProposer

#: Token ids a poisoned prompt starts with.
POISON = (5, 7, 9, 11)


class PoisonedProposer(SuffixProposer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.extends: dict[Hashable, int] = {}  # the poisoned requests running: extends so far

    def start(self, req_id: Hashable, prompt: Any) -> None:
        super().start(req_id, prompt)
        if tuple(int(t) for t in prompt[: len(POISON)]) == POISON:
            self.extends[req_id] = 0

    def extend(self, req_id: Hashable, tokens: Any) -> None:
        if req_id in self.extends:
            self.extends[req_id] += 1
            if self.extends[req_id] == 2:
                raise RuntimeError("injected proposer failure")
        super().extend(req_id, tokens)

    def finish(self, req_id: Hashable) -> None:
        self.extends.pop(req_id, None)
        super().finish(req_id)

    def abort(self, req_ids: Sequence[Hashable]) -> None:
        for req_id in req_ids:
            self.extends.pop(req_id, None)
        super().abort(req_ids)


engine_module.SuffixProposer = PoisonedProposer  # type: ignore[misc]

if __name__ == "__main__":
    raise SystemExit(main())
