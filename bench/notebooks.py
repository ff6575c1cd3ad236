"""relive against Kishu 0.3.4 on real notebooks: per-cell cost, storage, checkout, restore.

    python bench/notebooks.py                     # the three notebooks, full sizes
    python bench/notebooks.py --quick             # small sizes: a smoke run
    python bench/notebooks.py --notebook pandas   # one of them (pandas, sklearn, torch)
    python bench/notebooks.py --json out.json

Needs ipykernel, jupyter_client, pandas, scikit-learn, torch and kishu==0.3.4 (the `bench`
extra) in the Python that runs this file: every kernel runs that Python, with this
checkout's relive first on its PYTHONPATH.

Each notebook below is a list of cell sources. For each, one after the other, in one run:

- **plain**: a fresh ipykernel kernel runs the cells; each cell's wall time is taken by the
  client, from the execute request to its reply (so it includes IPython's post_run_cell
  hooks, where both tools snapshot);
- **relive**: a fresh kernel runs `%load_ext relive` (store in a temporary directory,
  `$RELIVE_STORE`), then the same cells, timed the same way; then `%relive checkout` of the
  snapshot after the notebook's early cell, and of the latest one, each timed as one cell;
  then the kernel is shut down and a new one runs `%load_ext relive` and `%relive restore`;
- **kishu**: a fresh kernel runs `from kishu import init_kishu; init_kishu(NOTEBOOK)` (what
  `kishu init` sends to the kernel; the notebook file holds the cells, since Kishu reads it
  at every commit), then the same cells; then `_kishu.checkout(COMMIT)` of the early and the
  latest commit, run as `kishu checkout` runs it (a silent execute request, so that it is
  not itself committed); then a new kernel runs `init_kishu` again (`kishu checkout`
  re-attaches Kishu to a kernel that lacks it) and checks out the latest commit. Kishu
  finds the notebook through `TEST_NOTEBOOK_PATH` and skips saving it through a frontend
  (`ENV_KISHU_TEST_MODE`): there is no Jupyter server here, and waiting for a save would
  only add to Kishu's time.

After each checkout and restore, a digest of every variable (arrays, tensors and frames by
their bytes, anything else by its pickle) is compared with the plain kernel's at the same
cell: "ok" or the names that differ.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

# --- the notebooks -------------------------------------------------------------------------
# Each is a list of cell sources; {n} is the size (rows, samples). `early` is the index of
# the cell whose state is checked out first (the first that holds the notebook's data).


@dataclass
class Notebook:
    name: str
    what: str
    cells: list[str]
    early: int
    full: int
    quick: int

    def sources(self, n: int) -> list[str]:
        return [cell.replace("{n}", str(n)) for cell in self.cells]


PANDAS = Notebook("pandas", "data cleaning: {n} rows of strings and floats; dropna, in-place edits, merge, groupby", [
    "import numpy as np\nimport pandas as pd",
    # the raw data: users as unique-ish strings, cities, amounts with holes
    "rng = np.random.default_rng(0)\n"
    "N = {n}\n"
    "cities = np.array(['Lyon', 'Paris', 'Oslo', 'Rome', 'Kyiv', 'Lima', 'Pune', 'Cork'])\n"
    "raw = pd.DataFrame({\n"
    "    'user': ['u%07d' % i for i in rng.integers(0, N // 4, N)],\n"
    "    'city': cities[rng.integers(0, len(cities), N)],\n"
    "    'amount': rng.lognormal(3.0, 1.0, N),\n"
    "    'qty': rng.integers(0, 20, N),\n"
    "    'day': rng.integers(0, 365, N),\n"
    "})\n"
    "raw.loc[rng.random(N) < 0.08, 'amount'] = np.nan\n"
    "raw.shape",
    "df = raw.dropna(subset=['amount']).reset_index(drop=True)\n"
    "df['amount'] = df['amount'].clip(upper=df['amount'].quantile(0.99))\n"
    "len(df)",
    # in-place edits of the cleaned frame
    "df.loc[df['qty'] == 0, 'qty'] = 1\n"
    "df['unit'] = df['amount'] / df['qty']\n"
    "df['city'] = df['city'].str.upper()",
    "users = pd.DataFrame({'user': df['user'].unique()})\n"
    "users['segment'] = np.where(np.random.default_rng(1).random(len(users)) < 0.3, 'pro', 'retail')\n"
    "len(users)",
    "merged = df.merge(users, on='user', how='left')\n"
    "merged.shape",
    "by_city = merged.groupby(['city', 'segment']).agg(total=('amount', 'sum'), n=('qty', 'size'),\n"
    "                                                  unit=('unit', 'mean')).reset_index()\n"
    "by_city.head()",
    "merged.drop(columns=['day'], inplace=True)\n"
    "merged['amount'] *= 1.1\n"
    "merged.loc[merged['segment'] == 'pro', 'unit'] *= 0.9",
    "top = merged.groupby('user')['amount'].sum().nlargest(100)\n"
    "del raw\n"
    "top.head()",
], early=1, full=1_000_000, quick=100_000)

SKLEARN = Notebook("sklearn", "fit/evaluate: make_classification {n} x 40, four models in separate cells", [
    "import numpy as np\n"
    "from sklearn.datasets import make_classification\n"
    "from sklearn.model_selection import train_test_split\n"
    "from sklearn.preprocessing import StandardScaler\n"
    "from sklearn.linear_model import LogisticRegression\n"
    "from sklearn.ensemble import RandomForestClassifier, HistGradientBoostingClassifier\n"
    "from sklearn.neighbors import KNeighborsClassifier\n"
    "from sklearn.metrics import accuracy_score, confusion_matrix",
    "X, y = make_classification(n_samples={n}, n_features=40, n_informative=20, n_redundant=5,\n"
    "                           n_classes=3, random_state=0)\n"
    "X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=0)\n"
    "X.shape",
    "scaler = StandardScaler().fit(X_train)\n"
    "Xs_train, Xs_test = scaler.transform(X_train), scaler.transform(X_test)",
    "logreg = LogisticRegression(max_iter=300).fit(Xs_train, y_train)\n"
    "scores = {'logreg': accuracy_score(y_test, logreg.predict(Xs_test))}\n"
    "scores",
    "forest = RandomForestClassifier(n_estimators=40, max_depth=14, n_jobs=1, random_state=0)\n"
    "forest.fit(X_train, y_train)\n"
    "scores['forest'] = accuracy_score(y_test, forest.predict(X_test))\n"
    "scores",
    "hgb = HistGradientBoostingClassifier(max_iter=60, random_state=0).fit(X_train, y_train)\n"
    "scores['hgb'] = accuracy_score(y_test, hgb.predict(X_test))\n"
    "scores",
    "knn = KNeighborsClassifier(n_neighbors=15).fit(Xs_train, y_train)\n"
    "knn_pred = knn.predict(Xs_test[:2000])\n"
    "scores['knn'] = accuracy_score(y_test[:2000], knn_pred)\n"
    "scores",
    "best = max(scores, key=scores.get)\n"
    "models = {'logreg': logreg, 'forest': forest, 'hgb': hgb, 'knn': knn}\n"
    "cm = confusion_matrix(y_test, models[best].predict(Xs_test if best in ('logreg', 'knn') else X_test))\n"
    "best, cm.tolist()",
], early=1, full=150_000, quick=10_000)

TORCH = Notebook("torch", "training loop: an MLP on {n} generated samples, Adam, a few epochs per cell", [
    "import torch\n"
    "from torch import nn\n"
    "torch.manual_seed(0)\n"
    "torch.set_num_threads(1)",
    "N = {n}\n"
    "X = torch.randn(N, 64)\n"
    "w_true = torch.randn(64, 4)\n"
    "y = (X @ w_true + 0.5 * torch.randn(N, 4)).argmax(dim=1)\n"
    "X_train, y_train, X_val, y_val = X[:int(0.9 * N)], y[:int(0.9 * N)], X[int(0.9 * N):], y[int(0.9 * N):]\n"
    "X.shape",
    "model = nn.Sequential(nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 4))\n"
    "optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)\n"
    "loss_fn = nn.CrossEntropyLoss()\n"
    "history = []\n"
    "def epoch(batch=256):\n"
    "    model.train()\n"
    "    order = torch.randperm(len(X_train))\n"
    "    total = 0.0\n"
    "    for i in range(0, len(order), batch):\n"
    "        idx = order[i:i + batch]\n"
    "        optimizer.zero_grad()\n"
    "        loss = loss_fn(model(X_train[idx]), y_train[idx])\n"
    "        loss.backward()\n"
    "        optimizer.step()\n"
    "        total += loss.item() * len(idx)\n"
    "    model.eval()\n"
    "    with torch.no_grad():\n"
    "        acc = (model(X_val).argmax(dim=1) == y_val).float().mean().item()\n"
    "    history.append((total / len(order), acc))\n"
    "    return history[-1]",
    "for _ in range(2):\n    epoch()\nhistory[-1]",
    "for _ in range(2):\n    epoch()\nhistory[-1]",
    "for g in optimizer.param_groups:\n    g['lr'] = 3e-4\nfor _ in range(2):\n    epoch()\nhistory[-1]",
    "checkpoint = {k: v.clone() for k, v in model.state_dict().items()}\n"
    "with torch.no_grad():\n"
    "    val_logits = model(X_val)\n"
    "val_logits.shape",
], early=1, full=200_000, quick=10_000)

NOTEBOOKS = {nb.name: nb for nb in (PANDAS, SKLEARN, TORCH)}


# --- what the kernel runs to compare states (imported there: `import notebooks`) ----------------

def digest(ns: dict[str, Any]) -> dict[str, str]:
    """A digest of each user variable: arrays, tensors and frames by their bytes, anything
    else by its pickle (modules and IPython's or the tools' own names left out)."""
    import hashlib
    import pickle
    import types

    out: dict[str, str] = {}
    for name, value in dict.items(ns):
        if name.startswith("_") or name in ("In", "Out", "exit", "quit", "get_ipython", "init_kishu", "kishu") \
                or isinstance(value, types.ModuleType):
            continue
        h = hashlib.blake2b(digest_size=12)
        try:
            _feed(h, value)
        except Exception as exc:  # noqa: BLE001 - a digest that cannot be taken is one too
            h.update(f"<{type(value).__name__}: {type(exc).__name__}>".encode())
        out[name] = h.hexdigest()
    return out


def state_bytes(ns: dict[str, Any]) -> int:
    """The user variables' size in memory: frames deep (their strings included), arrays and
    tensors by their buffers, anything else by its pickle."""
    import pickle
    import types

    total = 0
    for name, value in dict.items(ns):
        if name.startswith("_") or name in ("In", "Out", "exit", "quit", "get_ipython") \
                or isinstance(value, (types.ModuleType, types.FunctionType, type)):
            continue
        try:
            if hasattr(value, "memory_usage"):
                usage = value.memory_usage(deep=True)
                total += int(usage.sum() if hasattr(usage, "sum") else usage)
            elif hasattr(value, "nbytes"):
                total += int(value.nbytes)
            elif hasattr(value, "element_size"):
                total += value.element_size() * value.nelement()
            else:
                total += len(pickle.dumps(value, protocol=5))
        except Exception:  # noqa: BLE001
            pass
    return total


def _feed(h: Any, value: Any, depth: int = 0) -> None:
    import pickle

    kind = type(value).__module__.split(".")[0] + "." + type(value).__name__
    h.update(kind.encode())
    if kind in ("numpy.ndarray",):
        h.update(repr((value.shape, value.dtype.str)).encode())
        h.update(value.tobytes() if value.dtype != object else pickle.dumps(value.tolist()))
    elif kind in ("torch.Tensor", "torch.Parameter"):
        h.update(repr((tuple(value.shape), str(value.dtype))).encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    elif kind in ("pandas.DataFrame", "pandas.Series"):
        import pandas as pd
        h.update(repr((value.shape, list(getattr(value, "columns", [value.name])), list(
            value.dtypes.astype(str)) if kind == "pandas.DataFrame" else str(value.dtype))).encode())
        h.update(pd.util.hash_pandas_object(value, index=True).to_numpy().tobytes())
    elif kind.startswith("torch.") and hasattr(value, "state_dict"):  # modules, optimizers
        _feed_tree(h, value.state_dict())
    elif isinstance(value, dict) and any(type(v).__module__.startswith("torch") for v in value.values()):
        _feed_tree(h, value)
    elif callable(value) and hasattr(value, "__code__"):  # a function defined in a cell
        h.update(value.__code__.co_code)
    elif isinstance(value, (dict, list, tuple)) and depth < 8:
        _feed_tree(h, value, depth + 1)
    elif kind.startswith("sklearn.") and depth < 8:
        # by its state, its arrays by their bytes (a reloaded estimator's pickle is not
        # byte for byte the original's: numpy's pickles of equal arrays can differ)
        _feed_tree(h, value.__getstate__(), depth + 1)
    else:
        h.update(pickle.dumps(value, protocol=5))


def _feed_tree(h: Any, tree: Any, depth: int = 0) -> None:
    if isinstance(tree, dict):
        for k in sorted(tree, key=repr):
            h.update(repr(k).encode())
            _feed_tree(h, tree[k], depth)
    elif isinstance(tree, (list, tuple)):
        h.update(f"<{type(tree).__name__} {len(tree)}>".encode())
        for v in tree:
            _feed_tree(h, v, depth)
    else:
        _feed(h, tree, depth)


# --- driving kernels ------------------------------------------------------------------------

class Kernel:
    """A real ipykernel kernel of this Python, in ``cwd``, with ``env`` added."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        from jupyter_client.kernelspec import KernelSpecManager
        from jupyter_client.manager import KernelManager

        specs = cwd / ".kernels"
        spec = specs / "bench"
        spec.mkdir(parents=True, exist_ok=True)
        (spec / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "bench", "language": "python"}))
        path = [str(REPO / "python"), str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])]
        full_env = {**os.environ, **env, "PYTHONPATH": os.pathsep.join(path)}
        self.manager = KernelManager(kernel_name="bench", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(specs)]))
        self.manager.start_kernel(cwd=str(cwd), env=full_env)
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=120)

    def cell(self, code: str, silent: bool = False) -> tuple[float, str, str]:
        """Runs a cell (silent: as `kishu checkout` does, no history, no pre/post_run_cell);
        its wall time from request to reply, status and stderr (tracebacks included)."""
        err: list[str] = []

        def hook(msg: dict[str, Any]) -> None:
            content = msg["content"]
            if msg["msg_type"] == "stream" and content["name"] == "stderr":
                err.append(content["text"])
            elif msg["msg_type"] == "error":
                err.append("\n".join(content["traceback"]))

        started = time.perf_counter()
        reply = self.client.execute_interactive(code, silent=silent, timeout=1800, output_hook=hook)
        took = time.perf_counter() - started
        content = reply["content"]
        if content["status"] == "error" and not err:
            err.append(f"{content.get('ename')}: {content.get('evalue')}")
        return took, content["status"], "".join(err)

    def value(self, expression: str) -> Any:
        """A JSON expression evaluated silently (no snapshot, no commit)."""
        reply = self.client.execute_interactive("", silent=True, timeout=600,
                                                user_expressions={"v": f"__import__('json').dumps({expression})"},
                                                output_hook=lambda msg: None)
        result = reply["content"]["user_expressions"]["v"]
        if result["status"] != "ok":
            raise RuntimeError(f"{expression}: {result.get('ename')}: {result.get('evalue')}")
        return json.loads(eval(result["data"]["text/plain"]))  # a str's repr

    def digest(self) -> dict[str, str]:
        return self.value("__import__('notebooks').digest(globals())")

    def stop(self) -> None:
        try:
            self.client.stop_channels()
        finally:
            self.manager.shutdown_kernel(now=True)


def _ansi_free(text: str) -> str:
    import re
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def _first_lines(text: str, n: int = 3) -> str:
    lines = [line for line in _ansi_free(text).splitlines() if line.strip()]
    return " | ".join(lines[-n:])


def _tree_bytes(*paths: Path) -> int:
    total = 0
    for path in paths:
        if path.is_file():
            total += path.stat().st_size
        for root, _, files in os.walk(path):
            total += sum(os.path.getsize(os.path.join(root, f)) for f in files
                         if os.path.isfile(os.path.join(root, f)))
    return total


def _compare(got: dict[str, str] | None, want: dict[str, str]) -> str:
    if got is None:
        return "not run"
    if got == want:
        return "ok"
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    differ = sorted(k for k in set(want) & set(got) if want[k] != got[k])
    parts = [f"{label} {', '.join(names)}" for label, names in
             (("missing", missing), ("extra", extra), ("differ", differ)) if names]
    return "WRONG: " + "; ".join(parts)


@dataclass
class Result:
    tool: str
    cells_s: list[float] = field(default_factory=list)
    attach_s: float | None = None
    storage: int | None = None
    checkout_early_s: float | None = None
    checkout_latest_s: float | None = None
    restore_attach_s: float | None = None
    restore_s: float | None = None
    checks: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _common_env(work: Path, notebook_path: Path) -> dict[str, str]:
    return {
        "JPY_SESSION_NAME": str(notebook_path),       # relive: labels the notebook's runs
        "RELIVE_STORE": str(work / "relive-store"),
        "TEST_NOTEBOOK_PATH": str(notebook_path),     # kishu: the notebook without a server
        "ENV_KISHU_TEST_MODE": "1",                   # kishu: no frontend saves or reloads
        "KISHU_PATH_ROOT": str(work / "kishu-root"),  # kishu: its config, not in ~/.kishu
        # One thread per pool: spinning OpenMP threads on a shared 2-core machine made one
        # plain HistGradientBoosting cell take 79 s and the same cell under a tool 29 s.
        "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
    }


def _write_notebook(path: Path, sources: list[str]) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))


def run_plain(work: Path, nb: Notebook, sources: list[str]) -> tuple[Result, dict[int, dict[str, str]]]:
    res = Result("plain")
    env = _common_env(work, work / "plain.ipynb")
    kernel = Kernel(work, env)
    digests: dict[int, dict[str, str]] = {}
    try:
        for i, src in enumerate(sources):
            took, status, err = kernel.cell(src)
            res.cells_s.append(took)
            if status != "ok":
                res.errors.append(f"cell {i + 1}: {_first_lines(err)}")
            if i in (nb.early, len(sources) - 1):
                digests[i] = kernel.digest()
        res.storage = kernel.value("__import__('notebooks').state_bytes(globals())")
    finally:
        kernel.stop()
    return res, digests


def run_relive(work: Path, nb: Notebook, sources: list[str], want: dict[int, dict[str, str]]) -> Result:
    res = Result("relive")
    path = work / "relive.ipynb"
    env = _common_env(work, path)
    store = Path(env["RELIVE_STORE"])
    kernel = Kernel(work, env)
    heads: list[str] = []
    try:
        res.attach_s, status, err = kernel.cell("%load_ext relive")
        if status != "ok" or err.strip():
            res.errors.append(f"load_ext: {_first_lines(err)}")
        for i, src in enumerate(sources):
            took, status, err = kernel.cell(src)
            res.cells_s.append(took)
            if status != "ok":
                res.errors.append(f"cell {i + 1}: {_first_lines(err)}")
            elif err.strip():
                res.warnings.append(f"cell {i + 1}: {_first_lines(err)}")
            heads.append(kernel.value("__import__('relive.notebook', fromlist=['_session'])._session.head"))
        res.storage = _tree_bytes(store)
        for label, index in (("early", nb.early), ("latest", len(sources) - 1)):
            took, status, err = kernel.cell(f"%relive checkout {heads[index]}")
            setattr(res, f"checkout_{label}_s", took)
            if status != "ok" or err.strip():
                res.errors.append(f"checkout {label}: {_first_lines(err)}")
            res.checks[label] = _compare(kernel.digest(), want[index])
    finally:
        kernel.stop()
    kernel = Kernel(work, env)
    try:
        res.restore_attach_s, status, err = kernel.cell("%load_ext relive")
        res.restore_s, status, err = kernel.cell("%relive restore")
        if status != "ok" or err.strip():
            res.errors.append(f"restore: {_first_lines(err)}")
        res.checks["restore"] = _compare(kernel.digest(), want[len(sources) - 1])
    finally:
        kernel.stop()
    return res


def run_kishu(work: Path, nb: Notebook, sources: list[str], want: dict[int, dict[str, str]]) -> Result:
    res = Result("kishu")
    path = work / "kishu.ipynb"
    _write_notebook(path, sources)
    env = _common_env(work, path)
    (work / "kishu-root").mkdir(exist_ok=True)
    attach = f"from kishu import init_kishu\ninit_kishu({str(path)!r})"
    kernel = Kernel(work, env)
    heads: list[str] = []
    try:
        res.attach_s, status, err = kernel.cell(attach, silent=True)  # as `kishu init` sends it
        if status != "ok":
            res.errors.append(f"init_kishu: {_first_lines(err)}")
            return res
        for i, src in enumerate(sources):
            took, status, err = kernel.cell(src)
            res.cells_s.append(took)
            if status != "ok":
                res.errors.append(f"cell {i + 1}: {_first_lines(err)}")
            elif err.strip():
                res.warnings.append(f"cell {i + 1}: {_first_lines(err)}")
            heads.append(kernel.value("_kishu._kishu_branch.get_head().commit_id"))
        res.storage = _tree_bytes(*path.parent.glob(path.stem + ".kishudb*"))
        for label, index in (("early", nb.early), ("latest", len(sources) - 1)):
            took, status, err = kernel.cell(f"_kishu.checkout({heads[index]!r})", silent=True)
            setattr(res, f"checkout_{label}_s", took)
            if status != "ok":
                res.errors.append(f"checkout {label}: {_first_lines(err)}")
            res.checks[label] = _compare(kernel.digest(), want[index])
    finally:
        kernel.stop()
    kernel = Kernel(work, env)
    try:
        res.restore_attach_s, status, err = kernel.cell(attach, silent=True)
        if status != "ok":
            res.errors.append(f"restore init_kishu: {_first_lines(err)}")
        else:
            res.restore_s, status, err = kernel.cell(f"_kishu.checkout({heads[-1]!r})", silent=True)
            if status != "ok":
                res.errors.append(f"restore: {_first_lines(err)}")
                res.restore_s = None
            res.checks["restore"] = _compare(kernel.digest(), want[len(sources) - 1])
    finally:
        kernel.stop()
    return res


# --- the table --------------------------------------------------------------------------------

def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.1f} MB"


def _s(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f} s"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b <= 0:
        return "-"
    return f"{a / b:.2f}x"


def report(rows: list[dict[str, Any]]) -> str:
    lines = ["| notebook | tool | plain s | state | overhead s | overhead % | storage | checkout early | checkout latest "
             "| restore (fresh kernel) | states |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        plain = row["plain"]
        plain_total = sum(plain.cells_s)
        per_tool = {}
        for res in (row["relive"], row["kishu"]):
            over = sum(res.cells_s) - plain_total if len(res.cells_s) == len(plain.cells_s) else None
            restore = None if res.restore_s is None else res.restore_s + (res.restore_attach_s or 0.0)
            per_tool[res.tool] = (over, res.storage, res.checkout_early_s, res.checkout_latest_s, restore)
            checks = ", ".join(f"{k} {v}" for k, v in res.checks.items()) or "-"
            lines.append(
                f"| {row['name']} | {res.tool} | {plain_total:.2f} | {_mb(plain.storage)} | {_s(over)} | "
                f"{'-' if over is None else f'{100 * over / plain_total:+.0f}%'} | {_mb(res.storage)} | "
                f"{_s(res.checkout_early_s)} | {_s(res.checkout_latest_s)} | "
                f"{_s(restore) if restore is not None else ('FAILED' if res.errors else '-')} | {checks} |")
        r, k = per_tool["relive"], per_tool["kishu"]
        lines.append(f"| {row['name']} | relive/kishu | | | {_ratio(r[0], k[0])} | | {_ratio(r[1], k[1])} | "
                     f"{_ratio(r[2], k[2])} | {_ratio(r[3], k[3])} | {_ratio(r[4], k[4])} | |")
    return "\n".join(lines)


def per_cell(rows: list[dict[str, Any]]) -> str:
    out = []
    for row in rows:
        out.append(f"{row['name']}: per cell, plain / relive / kishu (s)")
        cells = zip(*(row[t].cells_s for t in ("plain", "relive", "kishu")), strict=False)
        for i, (p, r, k) in enumerate(cells):
            first = row["sources"][i].splitlines()[0][:50]
            out.append(f"  {i + 1:>2}  {p:7.2f} {r:7.2f} {k:7.2f}   {first}")
        for res in (row["relive"], row["kishu"]):
            out.append(f"  {res.tool}: attach {_s(res.attach_s)}; in the fresh kernel attach "
                       f"{_s(res.restore_attach_s)} + restore {_s(res.restore_s)}")
            for e in res.errors:
                out.append(f"  {res.tool} ERROR {e}")
            for w in res.warnings:
                out.append(f"  {res.tool} warning {w}")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--notebook", choices=sorted(NOTEBOOKS), action="append",
                        help="run only this notebook (repeatable)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the notebooks' sizes")
    parser.add_argument("--tools", nargs="+", default=["relive", "kishu"], choices=["relive", "kishu"])
    parser.add_argument("--json", help="write the measurements here")
    parser.add_argument("--keep", action="store_true", help="keep the working directories")
    args = parser.parse_args()

    import platform

    versions = {"python": platform.python_version()}
    for module in ("relive", "kishu", "ipykernel", "pandas", "sklearn", "torch"):
        try:
            from importlib.metadata import version
            versions[module] = version({"sklearn": "scikit-learn"}.get(module, module))
        except Exception:  # noqa: BLE001
            versions[module] = "?"
    print("versions:", ", ".join(f"{k} {v}" for k, v in versions.items()), f"; {os.cpu_count()} cores", flush=True)

    rows = []
    started = time.perf_counter()
    for name in args.notebook or list(NOTEBOOKS):
        nb = NOTEBOOKS[name]
        n = int((nb.quick if args.quick else nb.full) * args.scale)
        sources = nb.sources(n)
        work = Path(tempfile.mkdtemp(prefix=f"relive-nb-{name}-"))
        try:
            print(f"\n== {name}: {nb.what.replace('{n}', f'{n:,}')}", flush=True)
            plain, want = run_plain(work, nb, sources)
            print(f"  plain  {sum(plain.cells_s):.2f} s", flush=True)
            row: dict[str, Any] = {"name": name, "n": n, "sources": sources, "plain": plain}
            for tool in ("relive", "kishu"):
                if tool not in args.tools:
                    row[tool] = Result(tool)
                    continue
                t0 = time.perf_counter()
                res = (run_relive if tool == "relive" else run_kishu)(work, nb, sources, want)
                row[tool] = res
                print(f"  {tool:<6} {sum(res.cells_s):.2f} s in cells, storage {_mb(res.storage)}, "
                      f"{time.perf_counter() - t0:.0f} s in all; {res.checks}"
                      + (f"; errors: {res.errors}" if res.errors else ""), flush=True)
            rows.append(row)
        finally:
            if args.keep:
                print(f"  kept {work}")
            else:
                shutil.rmtree(work, ignore_errors=True)
    print(f"\n{time.perf_counter() - started:.0f} s in all\n")
    print(report(rows))
    print()
    print(per_cell(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"versions": versions, "quick": args.quick, "rows": [
            {"name": r["name"], "n": r["n"], **{t: r[t].__dict__ for t in ("plain", "relive", "kishu")}}
            for r in rows]}, indent=2))


if __name__ == "__main__":
    main()
