"""A store for tests of worker crashes (tests/test_parallel_split.py): a module of its own, because worker processes
unpickle it by name and pytest's importlib mode leaves test modules unimportable there."""

import os

from cosmos_assets.common.artefacts import LocalStore


class DiesOpening(LocalStore):
    """A local store whose reader dies at once, as a process killed for memory does, when it opens a doomed raw file."""

    def __init__(self, root, doomed: set[str]):
        super().__init__(root)
        self.doomed = doomed

    def local_path(self, reference):
        if str(reference) in self.doomed:
            os._exit(9)
        return super().local_path(reference)
