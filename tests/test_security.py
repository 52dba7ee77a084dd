"""Security properties checked on the code itself and on the running viewer.

* Nothing under ``src/`` deserialises pickles: no ``pickle``/``dill``/``joblib``/``marshal``
  loads, no ``torch.load`` without ``weights_only=True``, no ``np.load(..., allow_pickle=True)``
  (checked on the syntax tree, so comments and strings do not count and aliases do).
* ``splatfx view`` serves on the loopback interface unless told otherwise.

Path settings in shot.toml that would leave the shot folder are fuzzed in
``test_fuzz_readers.py`` (``test_shot_paths_cannot_escape`` and the ``shot_toml`` corpus).
"""

from __future__ import annotations

import ast
import http.client
import inspect
import socket
from pathlib import Path

import numpy as np
import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "splatfx"
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "joblib", "marshal", "shelve", "cloudpickle"}
UNSAFE_CALLS = {"load", "loads", "Unpickler", "open"}


def _constant(node: ast.AST | None) -> object:
    return node.value if isinstance(node, ast.Constant) else None


def _aliases(tree: ast.AST) -> dict[str, str]:
    """Local name -> module for ``import x [as y]`` and ``from x import name [as y]``."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names[alias.asname or alias.name.split(".")[0]] = alias.name
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def unsafe_loads(source: str, filename: str = "<source>") -> list[str]:
    """Every call in ``source`` that can deserialise a pickle, as ``file:line: what``."""
    tree = ast.parse(source, filename)
    aliases = _aliases(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            qualified = f"{aliases.get(func.value.id, func.value.id)}.{func.attr}"
        elif isinstance(func, ast.Name):
            qualified = aliases.get(func.id, func.id)
        else:
            continue
        module, _, name = qualified.rpartition(".")
        keywords = {k.arg: _constant(k.value) for k in node.keywords if k.arg}
        if module.split(".")[0] in UNSAFE_MODULES and name in UNSAFE_CALLS:
            found.append(f"{filename}:{node.lineno}: {qualified}")
        elif qualified == "torch.load" and keywords.get("weights_only") is not True:
            found.append(f"{filename}:{node.lineno}: torch.load without weights_only=True")
        elif qualified in ("numpy.load", "np.load") and keywords.get("allow_pickle") not in (None, False):
            found.append(f"{filename}:{node.lineno}: {qualified} with allow_pickle={keywords.get('allow_pickle')}")
    return found


def test_the_checker_finds_every_kind_of_pickle_load():
    snippet = (
        "import pickle, torch\nimport numpy as np\nfrom joblib import load as jl\nimport dill as d\n"
        "pickle.loads(b'')\ntorch.load('m.pt')\ntorch.load('m.pt', weights_only=False)\n"
        "np.load('a.npy', allow_pickle=True)\njl('x')\nd.load(f)\n"
        "# pickle.load(f) in a comment is fine\nprint('pickle.load(f)')\n"
        "torch.load('m.pt', weights_only=True)\nnp.load('a.npy')\nnp.load('a.npy', allow_pickle=False)\n"
    )
    found = unsafe_loads(snippet)
    assert [f.split(": ", 1)[1] for f in found] == [
        "pickle.loads", "torch.load without weights_only=True", "torch.load without weights_only=True",
        "numpy.load with allow_pickle=True", "joblib.load", "dill.load"]


def test_no_pickle_is_ever_loaded_in_src():
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 40
    found = [hit for path in files for hit in unsafe_loads(path.read_text(encoding="utf-8"), str(path))]
    assert found == []


def test_the_viewer_listens_on_localhost_by_default(tmp_path):
    pytest.importorskip("viser")
    from splatfx.commands.view import command
    from splatfx.io.formats import GaussianArrays, write_arrays
    from splatfx.viewer.app import ShotViewer, is_loopback

    host_option = next(p for p in command.params if p.name == "host")
    assert is_loopback(host_option.default)
    assert is_loopback(inspect.signature(ShotViewer).parameters["host"].default)

    n = 64
    rng = np.random.default_rng(0)
    quats = np.tile(np.array([1.0, 0, 0, 0], np.float32), (n, 1))
    write_arrays(GaussianArrays(rng.normal(size=(n, 3)).astype(np.float32), quats, np.full((n, 3), -3, np.float32),
                                np.zeros(n, np.float32), np.zeros((n, 1, 3), np.float32)), tmp_path / "scene.ply")
    viewer = ShotViewer(tmp_path / "scene.ply", port=0)
    try:
        assert is_loopback(viewer.host)
        page = http.client.HTTPConnection("127.0.0.1", viewer.port, timeout=10)
        page.request("GET", "/")
        assert page.getresponse().status == 200
        hosts = _own_listening_hosts(viewer.port)
        if hosts is not None:  # Linux: what this process listens on at that port, exactly
            assert hosts and all(is_loopback(h) for h in hosts), hosts
        else:  # elsewhere: knock from outside (another program may hold the port number there)
            for address in _outside_addresses():
                with pytest.raises(OSError), socket.create_connection((address, viewer.port), timeout=2):
                    pass
    finally:
        viewer.stop()


def _own_listening_hosts(port: int) -> set[str] | None:
    """The local addresses this process's TCP sockets listen on at ``port``, read from /proc
    (None where there is no /proc). A port number says nothing of who owns it: a socket of
    another program (a Ray worker left by an earlier test, with SO_REUSEPORT) may listen on
    the same number on every address."""
    import os

    tables = {"/proc/net/tcp": socket.AF_INET, "/proc/net/tcp6": socket.AF_INET6}
    if not os.path.isdir("/proc/self/fd") or not os.path.exists("/proc/net/tcp"):
        return None
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    hosts = set()
    for table, family in tables.items():
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].split(":")
            if fields[3] != "0A" or fields[9] not in inodes or int(port_hex, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(address)
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # host-order 32-bit words
            hosts.add(socket.inet_ntop(family, raw))
    return hosts


def _outside_addresses() -> list[str]:
    """This machine's non-loopback IPv4 addresses (to knock on the viewer from 'outside'): the
    host name's addresses, and the source address of a route to a documentation network (a UDP
    socket is connected, nothing is sent)."""
    found = set()
    try:
        found |= {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
    except OSError:
        pass
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("203.0.113.1", 9))
            found.add(probe.getsockname()[0])
        except OSError:
            pass  # no route: no outside address to knock on
    return sorted(a for a in found if not a.startswith("127.") and a != "0.0.0.0")


# --- issue #21 case 11: a symbolic link inside the shot folder cannot lead a path out of it -------------

def _shot_with(tmp_path: Path, settings: str) -> Path:
    root = tmp_path / "shot"
    root.mkdir()
    (root / "shot.toml").write_text(f"[shot]\nplates = '/nonexistent/plates'\n{settings}\n", encoding="utf-8")
    return root


def test_a_symlink_in_the_shot_folder_cannot_escape_it(tmp_path, capsys):
    from splatfx.cli import main
    from splatfx.core.errors import InputError
    from splatfx.shot.folder import Shot

    root = _shot_with(tmp_path, "[comp]\nocio = 'x.ocio'\n[refine]\nmodel = 'cfg/model'")
    (root / "x.ocio").symlink_to("/etc/passwd")
    outside = tmp_path / "elsewhere"
    (outside / "model").mkdir(parents=True)
    (root / "cfg").symlink_to(outside)  # a linked parent folder escapes too
    shot = Shot.open(root)
    with pytest.raises(InputError, match="outside the shot folder") as err:
        shot.path("x.ocio")
    assert err.value.source == str(root / "x.ocio") and "/etc/passwd" in err.value.problem
    with pytest.raises(InputError, match="outside the shot folder"):
        shot.path("cfg/model")
    with pytest.raises(SystemExit) as done:  # the comp never opens the linked file
        main(["comp", str(root)])
    assert done.value.code == 1
    (line,) = [l for l in capsys.readouterr().err.splitlines() if l.startswith("error:")]
    assert f"{root / 'x.ocio'}: leads outside the shot folder" in line and "unexpected" not in line


def test_a_symlink_that_stays_inside_the_shot_folder_is_fine(tmp_path):
    from splatfx.shot.folder import Shot

    root = _shot_with(tmp_path, "[comp]\nocio = 'link.ocio'")
    (root / "ocio").mkdir()
    (root / "ocio" / "config.ocio").write_text("ocio_profile_version: 2\n")
    (root / "link.ocio").symlink_to(root / "ocio" / "config.ocio")
    assert Shot.open(root).path("link.ocio") == root / "link.ocio"
    linked_root = tmp_path / "linked_shot"  # the shot folder itself may be reached through a link
    linked_root.symlink_to(root)
    assert Shot.open(linked_root).path("link.ocio") == linked_root / "link.ocio"
