"""A .NET process for snapdump's tests: Python hosting the .NET Core 3.1 runtime.

pythonnet loads the runtime that the dotnetcore2 wheel ships (through clr_loader and
host.runtimeconfig.json: .NET Core 3.1, invariant globalization since no ICU is installed),
then this script allocates known managed objects: COUNT strings "managed-string-N" kept in a
System.Collections.Generic.List<string>. It prints

    READY pid=<pid> runtime=<version> strings=<count>

and waits on stdin: "gc" collects (and answers "GC"), end of input or "quit" exits.
"""

import os
import sys

import dotnetcore2
from clr_loader import get_coreclr
from pythonnet import set_runtime

# Relative to the working directory when run as "host.py": the tests run it from its folder
# in a private mount namespace where that folder may be hidden under a new /tmp.
HERE = os.path.dirname(__file__)
DOTNET_ROOT = os.path.join(os.path.dirname(dotnetcore2.__file__), "bin")
COUNT = int(os.environ.get("SNAPDUMP_MANAGED_STRINGS", "100000"))

set_runtime(
    get_coreclr(
        runtime_config=os.path.join(HERE, "host.runtimeconfig.json"),
        dotnet_root=DOTNET_ROOT,
    )
)

import clr  # noqa: E402,F401  (loads the runtime chosen above)
from System import Environment, GC, String  # noqa: E402
from System.Collections.Generic import List  # noqa: E402

strings = List[String](COUNT)
for i in range(COUNT):
    strings.Add("managed-string-%d" % i)

print(
    "READY pid=%d runtime=%s strings=%d" % (os.getpid(), Environment.Version, strings.Count),
    flush=True,
)
for line in sys.stdin:
    command = line.strip()
    if command == "gc":
        GC.Collect()
        print("GC", flush=True)
    elif command == "quit":
        break
# Keep the list alive until the end.
assert strings.Count == COUNT
