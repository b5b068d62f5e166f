"""Request pools: what the load generator POSTs, from a user's file, a schema or a built-in service.

A pool is a list of `Request(route, body)` with the body pre-encoded as JSON. The runner writes
it to its work dir (`write_pool`) and the Locust subprocess reads it back (`read_pool`), so the
subprocess needs no service registry. This module imports neither Locust nor the registry at
import time (`builtin_requests` looks the service up when called).
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rstr.xeger import Xeger

MAX_LINES = 100_000
MAX_BYTES = 200 * 1024 * 1024
WRAPPED_KEYS = frozenset({"endpoint", "body"})
WORDS = (
    "apple", "river", "stone", "light", "green", "music", "table", "cloud", "happy", "quiet",
    "bread", "house", "water", "smile", "train", "paper", "chair", "dream", "storm", "sugar",
    "tiger", "ocean", "plant", "sound", "bright", "garden", "window", "forest", "yellow", "simple",
)  # fmt: skip
MAX_DEPTH = 16  # deeper (recursive) schemas get null
PATTERN_TRIES = 20  # strings drawn from a `pattern` before one that also fits the length limits
PATTERN_SPREAD = 8  # a drawn repeat (`+`, `*`, `{2,}`) runs at most this far over its minimum


@dataclass(frozen=True)
class Request:
    """One request: the route (with its leading slash) and the JSON body as sent."""

    route: str
    body: bytes


class RequestsFileError(ValueError):
    """A requests file the load cannot use; the message names the file and the 1-based line."""


class SchemaError(ValueError):
    """An OpenAPI document gives no usable JSON request body for a route."""

    fix = "pass --requests FILE"


class NoJsonBody(SchemaError):
    """The route takes a body other than JSON (a file upload): a requests file cannot carry it."""

    fix = "pass --locustfile FILE whose users send its bodies (a --requests file holds JSON bodies)"


def route_of(endpoint: str) -> str:
    """`"encode"` or `"/encode"` -> `"/encode"`."""
    return "/" + endpoint.strip().lstrip("/")


def _not_json_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse_line(where: str, text: str) -> Any:
    try:
        return json.loads(text, parse_constant=_not_json_constant)
    except json.JSONDecodeError as exc:
        raise RequestsFileError(f"{where}: not valid JSON ({exc.msg})") from None
    except ValueError as exc:
        raise RequestsFileError(f"{where}: not valid JSON ({exc})") from None


def read_requests_file(
    path: Path, default_route: str, routes: Collection[str] | None = None
) -> list[Request]:
    """The requests of a JSON Lines file, in file order.

    Each non-blank line is a request body (a JSON object) sent to `default_route`, or
    `{"endpoint": "/encode", "body": {...}}` (exactly those two keys) to pick the endpoint per
    line. `routes` (the service's routes, with or without slashes) makes an unknown endpoint an
    error. At most MAX_LINES requests and MAX_BYTES bytes.
    """
    path = Path(path)
    known = None if routes is None else sorted({route_of(r) for r in routes})
    default = route_of(default_route)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise RequestsFileError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if size > MAX_BYTES:
        raise RequestsFileError(
            f"{path}: {size / 2**20:.0f} MB is over the {MAX_BYTES // 2**20} MB cap; keep a sample"
        )
    found: list[Request] = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            where = f"{path}:{number}"
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise RequestsFileError(f"{where}: not UTF-8 text") from None
            if number == 1:
                text = text.removeprefix("\ufeff")
            text = text.strip()
            if not text:
                continue
            if len(found) >= MAX_LINES:
                raise RequestsFileError(f"{where}: more than {MAX_LINES} requests (the cap); keep a sample")
            found.append(_request_of_line(where, text, default, known))
    if not found:
        why = "empty file" if size == 0 else "only blank lines"
        raise RequestsFileError(f"{path}: no requests ({why})")
    return found


def _request_of_line(where: str, text: str, default: str, known: Sequence[str] | None) -> Request:
    value = _parse_line(where, text)
    if not isinstance(value, dict):
        raise RequestsFileError(f"{where}: a request body must be a JSON object, got {_json_kind(value)}")
    if set(value) == WRAPPED_KEYS:
        endpoint, body = value["endpoint"], value["body"]
        if not isinstance(endpoint, str) or not endpoint.strip("/ "):
            raise RequestsFileError(f'{where}: "endpoint" must be a route such as "/encode"')
        if not isinstance(body, dict):
            raise RequestsFileError(f'{where}: "body" must be a JSON object, got {_json_kind(body)}')
        route = route_of(endpoint)
        _check_route(where, route, known, "endpoint")
        return Request(route, json.dumps(body).encode())
    _check_route(where, default, known, "endpoint (the default)")
    return Request(default, text.encode())


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _check_route(where: str, route: str, known: Sequence[str] | None, what: str) -> None:
    if known is not None and route not in known:
        raise RequestsFileError(f"{where}: {what} {route!r} is not one of {', '.join(known)}")


def ordered(requests: Iterable[Request], shuffle_seed: int | None) -> list[Request]:
    """The requests as written, or shuffled with `random.Random(shuffle_seed)`."""
    found = list(requests)
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(found)
    return found


def write_pool(requests: Iterable[Request], path: Path) -> Path:
    """Write the pool file the Locust subprocess reads: one `{"route", "body"}` per line, the
    body as the exact JSON text it sends. Returns `path`."""
    lines = [json.dumps({"route": r.route, "body": r.body.decode("utf-8")}) + "\n" for r in requests]
    if not lines:
        raise ValueError("a request pool needs at least one request")
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        handle.writelines(lines)
    tmp.replace(path)
    return path


def read_pool(path: Path) -> list[Request]:
    """The requests `write_pool` wrote, bodies byte for byte."""
    found = []
    with Path(path).open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                item = json.loads(line)
                found.append(Request(str(item["route"]), str(item["body"]).encode("utf-8")))
    if not found:
        raise ValueError(f"{path}: the request pool is empty")
    return found


# --- bodies from an OpenAPI / JSON schema -------------------------------------------------------


def request_schema(openapi: Mapping[str, Any], route: str, api: str | None = None) -> dict[str, Any]:
    """The JSON request body schema of `route`'s POST in an OpenAPI document (BentoML's
    /docs.json), `$ref`s resolved; the media type's examples become `examples` when the schema
    has none. With `api` (the method's name), a tensor parameter gets the `shape` and `dtype`
    its `Shape`/`DType` validators declare (`_with_tensor_shapes`)."""
    path = route_of(route)
    paths = openapi.get("paths") or {}
    if path not in paths:
        have = ", ".join(sorted(p for p in paths if "post" in (paths[p] or {}))) or "none"
        raise SchemaError(f"the OpenAPI document has no endpoint {path} (POST endpoints: {have})")
    post = (paths[path] or {}).get("post")
    if not isinstance(post, dict):
        raise SchemaError(f"{path} takes no POST request")
    content = (post.get("requestBody") or {}).get("content") or {}
    media = content.get("application/json")
    if not isinstance(media, dict) or not isinstance(media.get("schema"), dict):
        types = ", ".join(sorted(content)) or "no body"
        raise NoJsonBody(f"{path} takes no JSON request body ({types})")
    schema = resolve_refs(media["schema"], openapi)
    if not any(k in schema for k in ("examples", "example", "default")):
        examples = _media_examples(media)
        if examples:
            schema = {**schema, "examples": examples}
    return _with_tensor_shapes(schema, openapi, api) if api else schema


def _with_tensor_shapes(schema: dict[str, Any], openapi: Mapping[str, Any], api: str) -> dict[str, Any]:
    """BentoML writes a tensor parameter into the request body as nested arrays of numbers, and
    its shape and dtype only into the `<api>__Input` component (the validation schema); a body
    of the wrong shape fails its reshape (BentoML 1.4.40 answers 500)."""
    declared = ((openapi.get("components") or {}).get("schemas") or {}).get(f"{api}__Input")
    properties = schema.get("properties")
    if not isinstance(declared, dict) or not isinstance(properties, dict):
        return schema
    tensors = {
        name: {key: value[key] for key in ("shape", "dtype") if key in value}
        for name, value in (declared.get("properties") or {}).items()
        if isinstance(value, dict) and value.get("type") == "tensor" and name in properties
    }
    if not tensors:
        return schema
    shaped = {name: {**properties[name], **tensors.get(name, {})} for name in properties}
    return {**schema, "properties": shaped}


def _media_examples(media: Mapping[str, Any]) -> list[Any]:
    if "example" in media:
        return [media["example"]]
    examples = media.get("examples")
    if isinstance(examples, dict):
        return [e["value"] for e in examples.values() if isinstance(e, dict) and "value" in e]
    return []


def resolve_refs(schema: Any, root: Mapping[str, Any], _seen: tuple[str, ...] = ()) -> Any:
    """`schema` with every local `$ref` ("#/components/schemas/X", "#/$defs/X") inlined from
    `root`; a recursive reference becomes `{}` where it would repeat."""
    if isinstance(schema, list):
        return [resolve_refs(item, root, _seen) for item in schema]
    if not isinstance(schema, dict):
        return schema
    ref = schema.get("$ref")
    if isinstance(ref, str):
        if ref in _seen:
            return {}
        target = _pointer(root, ref)
        siblings = {k: v for k, v in schema.items() if k != "$ref"}
        merged = {**target, **siblings} if isinstance(target, dict) else target
        return resolve_refs(merged, root, (*_seen, ref))
    return {key: resolve_refs(value, root, _seen) for key, value in schema.items()}


def _pointer(root: Mapping[str, Any], ref: str) -> Any:
    if not ref.startswith("#"):
        raise SchemaError(f"only local $refs are supported, got {ref!r}")
    node: Any = root
    for part in filter(None, ref[1:].split("/")):
        key = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            raise SchemaError(f"$ref {ref!r} points at nothing in the document")
    return node


def synthetic_requests(
    schema: Mapping[str, Any],
    route: str,
    count: int = 64,
    seed: int = 0,
    components: Mapping[str, Any] | None = None,
) -> list[Request]:
    """`count` bodies for `route` made from its request body schema (deterministic per `seed`).

    `examples`/`example`/`default` are used where the schema gives them; otherwise a value per
    type honouring enum/const, minLength/maxLength, minItems/maxItems, minimum/maximum (also
    exclusive) and multipleOf: short English words for strings, a string drawn from the regex of
    a `pattern` (`_patterned`), tensors of their declared shape and dtype, one array item unless
    minItems asks more, the required properties of objects, the first non-null choice of
    anyOf/oneOf. `format`s other than a few common ones are not honoured. `components` (the
    document's `components`) resolves `$ref`s left in `schema`.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    root: dict[str, Any] = {"components": dict(components or {}), **dict(schema)}
    resolved = resolve_refs(dict(schema), root)
    rng = random.Random(seed)
    path = route_of(route)
    return [Request(path, json.dumps(_value(resolved, rng, 0)).encode()) for _ in range(count)]


def _value(schema: Any, rng: random.Random, depth: int) -> Any:
    if not isinstance(schema, dict) or depth > MAX_DEPTH:
        return None if depth > MAX_DEPTH else _word_string(rng, 1, 12)
    if "const" in schema:
        return schema["const"]
    examples = schema.get("examples")
    if isinstance(examples, list) and examples:
        return examples[rng.randrange(len(examples))]
    for key in ("example", "default"):
        if key in schema:
            return schema[key]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[rng.randrange(len(enum))]
    if "allOf" in schema:
        return _value(_merge_all_of(schema), rng, depth)
    for key in ("anyOf", "oneOf"):
        choices = schema.get(key)
        if isinstance(choices, list) and choices:
            # the first real choice: not null, nor `{}` (a cut recursive $ref, or "anything")
            usable = [c for c in choices if isinstance(c, dict) and c and c.get("type") != "null"]
            nulls = [c for c in choices if isinstance(c, dict) and c.get("type") == "null"]
            return _value((usable or nulls or choices)[0], rng, depth + 1)
    kind = _type_of(schema)
    if kind == "tensor" or (kind == "array" and isinstance(schema.get("shape"), list)):
        return _tensor(schema, rng)
    if kind == "object":
        return _object(schema, rng, depth)
    if kind == "array":
        return _array(schema, rng, depth)
    if kind == "integer":
        return _integer(schema, rng)
    if kind == "number":
        return _number(schema, rng)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    return _string(schema, rng)


def _type_of(schema: Mapping[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"] or ["null"]
        kind = kinds[0]
    if isinstance(kind, str):
        return kind
    if "properties" in schema or "required" in schema:
        return "object"
    if "items" in schema or "prefixItems" in schema:
        return "array"
    if any(k in schema for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")):
        return "number"
    return "string"


def _merge_all_of(schema: Mapping[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
    for part in schema["allOf"]:
        if not isinstance(part, dict):
            continue
        for key, value in part.items():
            if key == "properties":
                merged["properties"] = {**merged.get("properties", {}), **value}
            elif key == "required":
                merged["required"] = sorted({*merged.get("required", []), *value})
            else:
                merged.setdefault(key, value)
    return merged


def _object(schema: Mapping[str, Any], rng: random.Random, depth: int) -> dict[str, Any]:
    properties = schema.get("properties") or {}
    required = [name for name in schema.get("required") or [] if isinstance(name, str)]
    body = {name: _value(properties.get(name, {}), rng, depth + 1) for name in required}
    wanted = int(schema.get("minProperties") or 0)
    for name, sub in properties.items():
        if len(body) >= wanted:
            break
        body.setdefault(name, _value(sub, rng, depth + 1))
    return body


def _array(schema: Mapping[str, Any], rng: random.Random, depth: int) -> list[Any]:
    prefix = schema.get("prefixItems")
    low = int(schema.get("minItems") or 0)
    high = schema.get("maxItems")
    size = max(1, low) if high is None else min(max(1, low), int(high))
    items: list[Any] = []
    for index in range(size):
        if isinstance(prefix, list) and index < len(prefix):
            items.append(_value(prefix[index], rng, depth + 1))
        else:
            items.append(_value(schema.get("items", {}), rng, depth + 1))
    return items


def _tensor(schema: Mapping[str, Any], rng: random.Random) -> Any:
    """Nested lists of `shape` (a free dimension, -1, gets 1; no shape: one value in a list) of
    `dtype` (BentoML's `DType`: integers, booleans, else floats in [0, 1))."""
    shape = schema.get("shape")
    sizes = [int(n) if isinstance(n, int) and n > 0 else 1 for n in shape] if isinstance(shape, list) else [1]
    dtype = str(schema.get("dtype") or "float32")

    def leaf() -> Any:
        if dtype.startswith(("int", "uint")):
            return rng.randint(0, 9)
        if dtype == "bool":
            return rng.random() < 0.5
        return round(rng.random(), 4)

    def block(depth: int) -> Any:
        return [leaf() if depth == len(sizes) - 1 else block(depth + 1) for _ in range(sizes[depth])]

    return block(0) if sizes else leaf()


def _bounds(schema: Mapping[str, Any], step: float) -> tuple[float, float]:
    low, high = schema.get("minimum"), schema.get("maximum")
    ex_low, ex_high = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if isinstance(ex_low, bool):  # OpenAPI 3.0: a flag on minimum
        ex_low = low if ex_low else None
        low = None if ex_low is not None else low
    if isinstance(ex_high, bool):
        ex_high = high if ex_high else None
        high = None if ex_high is not None else high
    lows = [float(v) for v in (low,) if v is not None] + [float(v) + step for v in (ex_low,) if v is not None]
    highs = [float(v) for v in (high,) if v is not None]
    highs += [float(v) - step for v in (ex_high,) if v is not None]
    lo = max(lows) if lows else None
    hi = min(highs) if highs else None
    if hi is None:
        return (0.0, 100.0) if lo is None else (lo, lo + 100.0)
    if lo is None:
        return (hi - 100.0 if hi < 0 else 0.0), hi
    return lo, max(lo, hi)


def _integer(schema: Mapping[str, Any], rng: random.Random) -> int:
    lo, hi = _bounds(schema, 1.0)
    low, high = math.ceil(lo), math.floor(hi)
    multiple = schema.get("multipleOf")
    if isinstance(multiple, int) and not isinstance(multiple, bool) and multiple > 0:
        first, last = math.ceil(low / multiple), math.floor(high / multiple)
        return multiple * rng.randint(first, max(first, last))
    return rng.randint(low, max(low, high))


def _number(schema: Mapping[str, Any], rng: random.Random) -> float:
    multiple = schema.get("multipleOf")
    if isinstance(multiple, int | float) and not isinstance(multiple, bool) and multiple > 0:
        lo, hi = _bounds(schema, float(multiple))
        first, last = math.ceil(lo / multiple), math.floor(hi / multiple)
        return float(multiple * rng.randint(first, max(first, last)))
    lo, hi = _bounds(schema, 1e-6)
    value = round(rng.uniform(lo, hi), 4)
    return min(max(value, lo), hi)


def _string(schema: Mapping[str, Any], rng: random.Random) -> str:
    low = int(schema.get("minLength") or 0)
    high = schema.get("maxLength")
    fixed = {
        "date-time": "2024-01-01T00:00:00Z",
        "date": "2024-01-01",
        "time": "12:00:00",
        "email": "user@example.com",
        "uri": "https://example.com/",
        "url": "https://example.com/",
        "ipv4": "127.0.0.1",
    }
    form = schema.get("format")
    if form in fixed:
        text = fixed[form]
    elif form == "uuid":
        text = "-".join("".join(rng.choice("0123456789abcdef") for _ in range(n)) for n in (8, 4, 4, 4, 12))
    else:
        text = _word_string(rng, max(1, low), None if high is None else int(high))
    pattern = schema.get("pattern")
    if not isinstance(pattern, str) or _matches(pattern, text):
        return text
    return _patterned(pattern, rng, low, None if high is None else int(high)) or text


def _matches(pattern: str, text: str) -> bool:
    try:
        return re.search(pattern, text) is not None
    except re.error:
        return False


def _patterned(pattern: str, rng: random.Random, low: int, high: int | None) -> str | None:
    """A string `pattern` matches (JSON Schema's unanchored search), drawn by `rstr.xeger`,
    within `low..high` characters if one of `PATTERN_TRIES` draws is; None when Python's `re`
    cannot read the pattern (an ECMA-only escape such as `\\p{L}`) or no draw matches (a
    lookahead, which xeger does not honour)."""
    try:
        compiled = re.compile(pattern)
    except re.error:
        return None
    draw = _ShortRepeats(rng)
    matching: str | None = None
    for _ in range(PATTERN_TRIES):
        try:
            text = draw.xeger(compiled)
        except (IndexError, KeyError, ValueError, re.error):  # a class with nothing left to draw
            return matching
        if compiled.search(text) is None:
            continue
        if low <= len(text) and (high is None or len(text) <= high):
            return text
        matching = matching or text
    return matching


class _ShortRepeats(Xeger):
    """rstr's xeger, with repeats drawn within `PATTERN_SPREAD` of their minimum (rstr draws up
    to 100 for `+`: a `\\d+` under a maxLength of 8 would rarely fit)."""

    def _handle_repeat(self, start_range: int, end_range: int, value: Any) -> str:
        return str(super()._handle_repeat(start_range, min(end_range, start_range + PATTERN_SPREAD), value))


def _word_string(rng: random.Random, low: int, high: int | None) -> str:
    text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3)))
    while len(text) < low:
        text += " " + rng.choice(WORDS)
    if high is not None and len(text) > high:
        text = text[:high]
        if text.endswith(" "):  # a trailing blank would be trimmed by some validators
            text = text.rstrip() if len(text.rstrip()) >= low else text[:-1] + "s"
    return text


# --- the registered built-in services ----------------------------------------------------------


def builtin_requests(
    service: str, rows_per_request: int, count: int = 256, seed: int = 0, route: str | None = None
) -> list[Request]:
    """`count` requests of `rows_per_request` rows from a registered service's row pool
    (`loadtests.payloads.bodies`), to its batchable route or `route`."""
    from core.registry import service_spec
    from loadtests.payloads import bodies

    path = route_of(route) if route else service_spec(service).route
    return [Request(path, body) for body in bodies(service, rows_per_request, count, seed)]
