"""The study file's YAML reader: ``yaml.SafeLoader`` with refusals for duplicate keys, alias
bombs, deep nesting and huge integers (limits in :mod:`study.limits`)."""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.events import AliasEvent
from yaml.nodes import ScalarNode, SequenceNode

from study.limits import MAX_FILE_BYTES, MAX_INT, MAX_YAML_DEPTH, MAX_YAML_WEIGHT, StudyError


class _YamlLimit(yaml.YAMLError):
    """A study-specific refusal while reading YAML; ``where`` is a line (and key path) prefix."""

    def __init__(self, where: str, message: str):
        super().__init__(f"{where}: {message}")
        self.where, self.message = where, message


_TIMESTAMP = "tag:yaml.org,2002:timestamp"


class _StudyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses what PyYAML accepts silently or dies on:

    * a key repeated in one mapping (PyYAML keeps the last value without a word);
    * alias expansion beyond MAX_YAML_WEIGHT and recursive aliases (``&a [*a]``);
    * nesting beyond MAX_YAML_DEPTH (the composer would raise RecursionError);
    * integers beyond MAX_INT; values whose constructor raises a plain Python error (e.g.
      ``!!timestamp 2024-13-45`` → ValueError) become YAML errors with their line.

    Unquoted dates stay strings (no study key is a date; ``name: 2024-01-01`` is a name).
    Anchors, aliases and merge keys (``<<:``) work as in SafeLoader.
    """

    yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag != _TIMESTAMP]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0
        self._path: list[str] = []
        self._weight: dict[int, int] = {}  # id(node) -> nodes + scalar chars, aliases expanded

    # -- composing: depth, aliases, duplicate keys ----------------------------------------------
    def _where(self, mark) -> str:
        path = "".join(self._path).lstrip(".")
        path = path if len(path) <= 80 else path[:77] + "..."
        return f"line {mark.line + 1}" + (f" ({path})" if path else "")

    def compose_node(self, parent, index):
        if self.check_event(AliasEvent):
            event = self.peek_event()
            node = self.anchors.get(event.anchor)
            if node is not None and id(node) not in self._weight:
                raise _YamlLimit(self._where(event.start_mark),
                                 f"alias *{event.anchor} refers to the anchor that contains it "
                                 "(a recursive structure)")
            return super().compose_node(parent, index)
        if isinstance(index, ScalarNode):
            self._path.append(f".{index.value[:80]}")
        elif isinstance(index, int):
            self._path.append(f"[{index}]")
        else:
            self._path.append("")  # the document or a mapping key
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise _YamlLimit(self._where(self.peek_event().start_mark),
                                 f"nested deeper than {MAX_YAML_DEPTH} levels")
            node = super().compose_node(parent, index)
            if isinstance(node, ScalarNode):
                weight = 1 + len(node.value)
                if node.tag == "tag:yaml.org,2002:int":
                    self._check_int(node)
            elif isinstance(node, SequenceNode):
                weight = 1 + sum(self._weight[id(child)] for child in node.value)
            else:
                weight = 1 + sum(self._weight[id(k)] + self._weight[id(v)] for k, v in node.value)
            if weight > MAX_YAML_WEIGHT:
                raise _YamlLimit(self._where(node.start_mark),
                                 f"expands to more than {MAX_YAML_WEIGHT:,} nodes and characters "
                                 "(aliases of aliases?)")
        finally:
            self._depth -= 1
            self._path.pop()
        self._weight[id(node)] = weight
        return node

    def compose_mapping_node(self, anchor):
        node = super().compose_mapping_node(anchor)
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue  # unhashable keys are refused by the constructor; merges may override
            key = self.construct_object(key_node)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:
                continue
            if first is not key_node:
                raise _YamlLimit(
                    self._where(key_node.start_mark),
                    f"key {key_node.value[:80]!r} repeated in one mapping (first at line "
                    f"{first.start_mark.line + 1}); YAML would silently keep only the last value")
        return node

    # -- constructing: integers, plain Python errors --------------------------------------------
    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError, TypeError) as err:
            raise ConstructorError(None, None, f"cannot read this value ({err})",
                                   node.start_mark) from None

    def _check_int(self, node) -> None:
        """An integer literal beyond MAX_INT (checked while composing, where its key path is
        known; int() of thousands of digits is slow, and refused past 4,300)."""
        digits = node.value.replace("_", "").lstrip("+-")
        try:
            value = None if len(digits) > 40 else SafeConstructor.construct_yaml_int(self, node)
        except ValueError:  # ``!!int 1.5``: the constructor reports it
            return
        if value is None or abs(value) > MAX_INT:
            shown = node.value[:20] + "..." if value is None else str(value)
            raise _YamlLimit(self._where(node.start_mark),
                             f"integer {shown} is too large (limit {MAX_INT:,})")


def load_yaml(text: str, label: str) -> Any:
    """The YAML document in ``text`` (SafeLoader plus the refusals of :class:`_StudyLoader`)."""
    if len(text) > MAX_FILE_BYTES:
        raise StudyError(f"{label}: {len(text):,} characters; a study file is at most "
                         f"{MAX_FILE_BYTES:,} (MAX_FILE_BYTES)")
    loader = None
    try:
        loader = _StudyLoader(text)  # the reader refuses control characters right here
        return loader.get_single_data()
    except _YamlLimit as err:
        raise StudyError(f"{label}: {err.where}: {err.message}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise StudyError(f"{label}: not valid YAML{where}: {problem}") from None
    except RecursionError:  # a backstop: MAX_YAML_DEPTH is meant to come first
        raise StudyError(f"{label}: nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()
