"""DictWrapper: the dict with attribute access that the original's `Model.forward` returns.

Code written against the original reads a training step's outputs both ways, `out.reconstructed_vectors` and
`out["target_vectors"]`; this class keeps both working. As in the original, attribute access covers the top level
only: nested dicts stay plain dicts.
"""
from __future__ import annotations


class DictWrapper(dict):
    """A dict whose keys are also attributes: `d.key` is `d["key"]`, `d.key = v` sets `d["key"]`."""

    def __getattr__(self, name: str):
        # Only called when normal lookup fails, so dict methods (items, keys, ...) keep precedence.
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no key or attribute '{name}' "
                                 f"(keys: {', '.join(map(str, self)) or 'none'})") from None

    def __setattr__(self, name: str, value) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __dir__(self):
        return list(super().__dir__()) + [k for k in self if isinstance(k, str)]

    def __getstate__(self):
        return dict(self)

    def __setstate__(self, state) -> None:
        self.update(state)
