"""The program's state as records: pickling, shared references, out-of-band buffers."""

from collections.abc import Callable
from typing import Any

# A reducer of a library's type: (object, the snapshot's storages by key) -> pickle's
# reduction, or None to pickle the object as pickle would. ``storages`` is shared by all the
# records of one snapshot, so that tensors viewing one storage share it after loading.
Reducer = Callable[[Any, dict[int, Any]], Any]
