"""Moved to lorarun/sshlink/session.py: the SSH link sits below both the controller and the adapters.

This name is an alias of that module (the same object in sys.modules), so `import` and monkeypatching through
either name reach one module.
"""
import sys

from lorarun.sshlink import session as _moved

sys.modules[__name__] = _moved
