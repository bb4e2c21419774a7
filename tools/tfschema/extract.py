#!/usr/bin/env python3
"""Rebuild a Terraform provider schema from a prebuilt cdktf provider package.

The npm packages @cdktf/provider-<name> are generated from a provider's own
schema (`terraform providers schema -json`). Each resource, data source and
the provider itself is one folder under lib/ with:

  index.js    a class per resource / data source / provider, whose
              synthesizeHclAttributes() lists every configurable argument
              with its Terraform name, whether it is a block, list / set /
              map / single nesting and the element type; a *ToHclTerraform
              function per nested block doing the same for the block; and
              getters (getStringAttribute('name'), ...) for every attribute,
              including the computed-only ones.
  index.d.ts  the config interfaces, where a required argument or block is
              declared without `?`, and a block limited to one item is typed
              as a single struct rather than an array.

This script reads those two files per folder and writes one JSON document in
the shape of `terraform providers schema -json`'s provider entry:

  {"provider": {"version": 0, "block": BLOCK},
   "resource_schemas": {"google_x": {"version": 0, "block": BLOCK}},
   "data_source_schemas": {...}}

  BLOCK = {"attributes": {name: {"type": CTY, "required"|"optional"|"computed": true}},
           "block_types": {name: {"nesting_mode": "list"|"set"|"single",
                                  "min_items": n, "max_items": n, "block": BLOCK}}}

Usage: extract.py PACKAGE_DIR OUT.json
"""

import json
import os
import re
import sys

PRIMITIVE = {"string": "string", "number": "number", "boolean": "bool"}

ENTRY_RE = re.compile(
    r'^\s+"?(?P<name>[A-Za-z0-9_]+)"?: \{\n'
    r"\s+value: (?P<value>.*?),\n"
    r"\s+isBlock: (?P<block>true|false),\n"
    r'\s+type: "(?P<type>\w+)",\n'
    r'\s+storageClassType: "(?P<storage>\w+)",\n',
    re.M,
)
GETTER_RE = re.compile(
    r"get (?P<camel>\w+)\(\) \{\n\s+return (?P<tolist>cdktf\.Fn\.tolist\()?"
    r"this\.get(?P<kind>\w+)Attribute\('(?P<name>[A-Za-z0-9_]+)'\)"
)
COMPLEX_RE = re.compile(
    r'this\._\w+ = new (?P<cls>[\w.]+)\(this, "(?P<name>[A-Za-z0-9_]+)"(?:, (?P<set>true|false))?\)'
)
INPUT_RE = re.compile(r"get (\w+)Input\(\) \{")
TYPE_RE = re.compile(r'^(\w+)\.tfResourceType = "([^"]+)";', re.M)
IFACE_RE = re.compile(r"^export interface (\w+)[^{]*\{\n(.*?)^\}", re.M | re.S)
PROP_RE = re.compile(r"^    readonly (\w+)(\?)?: (.*)$", re.M)

GETTER_TYPES = {
    "String": "string",
    "Number": "number",
    "Boolean": "bool",
    "List": ["list", "string"],
    "NumberList": ["list", "number"],
    "BooleanList": ["list", "bool"],
    "StringMap": ["map", "string"],
    "NumberMap": ["map", "number"],
    "BooleanMap": ["map", "bool"],
    "AnyMap": ["map", "dynamic"],
}
CDKTF_COMPLEX = {
    "cdktf.StringMap": ["map", "string"],
    "cdktf.NumberMap": ["map", "number"],
    "cdktf.BooleanMap": ["map", "bool"],
    "cdktf.AnyMap": ["map", "dynamic"],
    "cdktf.StringMapList": ["list", ["map", "string"]],
    "cdktf.NumberMapList": ["list", ["map", "number"]],
    "cdktf.BooleanMapList": ["list", ["map", "bool"]],
    "cdktf.StringListList": ["list", ["list", "string"]],
    "cdktf.NumberListList": ["list", ["list", "number"]],
}


def top_level_chunks(src):
    """Top-level functions and classes of a compiled module, by name."""
    functions, classes = {}, {}
    for m in re.finditer(r"^(function|class) (\w+)(.*?)^\}$", src, re.M | re.S):
        kind, name, body = m.group(1), m.group(2), m.group(3)
        if kind == "function":
            functions[name] = body
        else:
            parent = re.match(r" extends ([\w.]+)", body)
            classes[name] = (parent.group(1) if parent else "", body)
    return functions, classes


def config_entries(body):
    """Configurable arguments listed by a *ToHclTerraform function or synthesizeHclAttributes()."""
    out = {}
    for m in ENTRY_RE.finditer(body):
        value = m.group("value")
        camel = re.search(r"(?:struct\.|this\._)(\w+)(?:\.internalValue)?\)?$", value)
        nested = [
            n for n in re.findall(r"(?<![.\w])(\w+)ToHclTerraform", value)
        ]
        out[m.group("name")] = {
            "camel": camel.group(1) if camel else None,
            "block": m.group("block") == "true",
            "type": m.group("type"),
            "storage": m.group("storage"),
            "nested": nested[0] if nested else None,
        }
    return out


def upper_first(s):
    return s[:1].upper() + s[1:]


class Module:
    """One lib/<folder>: a resource, data source or provider."""

    def __init__(self, js, dts):
        self.functions, self.classes = top_level_chunks(js)
        self.types = dict(TYPE_RE.findall(js))
        self.ifaces = {}
        for m in IFACE_RE.finditer(dts):
            props = {}
            for p in PROP_RE.finditer(m.group(2)):
                props[p.group(1)] = {"optional": bool(p.group(2)), "ts": p.group(3)}
            self.ifaces[m.group(1)] = props

    # ---------------------------------------------------------------- computed

    def class_attributes(self, cls):
        """Every attribute a class exposes (getters and complex members): name -> (cty type, configurable)."""
        if cls not in self.classes:
            return {}
        body = self.classes[cls][1]
        inputs = set(INPUT_RE.findall(body))
        attrs = {}
        for m in GETTER_RE.finditer(body):
            t = GETTER_TYPES.get(m.group("kind"))
            if t is None:
                raise ValueError(f"{cls}: unknown getter kind {m.group('kind')}")
            if m.group("tolist") and isinstance(t, list) and t[0] == "list":
                t = ["set", t[1]]
            attrs[m.group("name")] = (t, m.group("camel") in inputs)
        for m in COMPLEX_RE.finditer(body):
            attrs[m.group("name")] = (self.complex_type(m.group("cls"), m.group("set")), None)
        return attrs

    def complex_type(self, cls, wraps_set):
        if cls in CDKTF_COMPLEX:
            return CDKTF_COMPLEX[cls]
        if cls.endswith("List"):
            elem = cls[: -len("List")] + "OutputReference"
            return ["set" if wraps_set == "true" else "list", self.object_type(elem)]
        if cls.endswith("Map"):
            return ["map", self.object_type(cls[: -len("Map")] + "OutputReference")]
        if cls.endswith("OutputReference"):
            return ["list", self.object_type(cls)]
        raise ValueError(f"unknown complex class {cls}")

    def object_type(self, cls):
        return ["object", {n: t for n, (t, _) in sorted(self.class_attributes(cls).items())}]

    # ---------------------------------------------------------------- config

    def block(self, entries, iface, ref_class):
        """A schema block from config entries, the config interface and the class holding its getters."""
        props = self.ifaces.get(iface, {})
        attributes, block_types = {}, {}
        for name, e in sorted(entries.items()):
            prop = props.get(e["camel"], {"optional": True, "ts": ""})
            required = not prop["optional"]
            if e["block"]:
                nested_struct = upper_first(e["nested"])
                child = self.block(
                    config_entries(self.functions.get(e["nested"] + "ToHclTerraform", "")),
                    nested_struct,
                    nested_struct + "OutputReference",
                )
                if e["type"] == "struct":
                    nb = {"nesting_mode": "single", "block": child}
                else:
                    nb = {"nesting_mode": e["type"], "block": child}
                    if required:
                        nb["min_items"] = 1
                    if "[]" not in prop["ts"]:
                        nb["max_items"] = 1
                block_types[name] = nb
                continue
            storage, kind = e["storage"], e["type"]
            if storage in PRIMITIVE:
                t = PRIMITIVE[storage]
            elif storage.endswith("List") and storage[: -len("List")] in PRIMITIVE:
                t = [kind if kind in ("list", "set") else "list", PRIMITIVE[storage[: -len("List")]]]
            elif storage.endswith("Map") and storage[: -len("Map")] in PRIMITIVE:
                t = ["map", PRIMITIVE[storage[: -len("Map")]]]
            elif e["nested"]:
                obj = self.object_type(upper_first(e["nested"]) + "OutputReference")
                t = obj if kind == "struct" else [kind, obj]
            else:
                raise ValueError(f"{iface}.{name}: unknown storage class {storage}")
            attr = {"type": t}
            if required:
                attr["required"] = True
            else:
                attr["optional"] = True
            attributes[name] = attr
        # Computed-only attributes: exposed by a getter but not configurable.
        for name, (t, configurable) in sorted(self.class_attributes(ref_class).items()):
            if name in entries or name in attributes or name in block_types:
                continue
            attributes[name] = {"type": t, "computed": True}
        out = {}
        if attributes:
            out["attributes"] = attributes
        if block_types:
            out["block_types"] = block_types
        return out

    def schemas(self):
        """(kind, terraform type name, schema) for each top-level class of the module."""
        for cls, tf_type in self.types.items():
            parent, body = self.classes[cls]
            synth = re.search(r"synthesizeHclAttributes\(\) \{(.*?)\n    \}\n", body, re.S)
            entries = config_entries(synth.group(1) if synth else "")
            kind = {
                "cdktf.TerraformResource": "resource",
                "cdktf.TerraformDataSource": "data",
                "cdktf.TerraformProvider": "provider",
            }[parent]
            if kind == "provider":
                entries.pop("alias", None)
            block = self.block(entries, cls + "Config", cls)
            if kind == "provider":
                block.get("attributes", {}).pop("alias", None)
            yield kind, tf_type, {"version": 0, "block": block}


def read_module(folder):
    """A module's compiled JS and declarations, with its struct files (large
    resources keep their nested blocks in index-structs/) joined in and the
    cross-file prefixes (`index_structs_1.`, `structs0_1.`) removed."""
    js, dts = [], []
    for root, _, files in os.walk(folder):
        for name in sorted(files):
            with open(os.path.join(root, name), encoding="utf-8") as f:
                text = f.read()
            if name.endswith(".d.ts"):
                dts.append(text)
            elif name.endswith(".js"):
                js.append(text)
    strip = re.compile(r"\b(?!cdktf\b)\w+_1\.")
    return strip.sub("", "\n".join(js)), "\n".join(dts)


def extract(package_dir):
    lib = os.path.join(package_dir, "lib")
    out = {"provider": None, "resource_schemas": {}, "data_source_schemas": {}}
    for folder in sorted(os.listdir(lib)):
        if not os.path.isfile(os.path.join(lib, folder, "index.js")):
            continue
        js_src, dts_src = read_module(os.path.join(lib, folder))
        try:
            module = Module(js_src, dts_src)
            for kind, name, schema in module.schemas():
                if kind == "provider":
                    out["provider"] = schema
                elif kind == "resource":
                    out["resource_schemas"][name] = schema
                else:
                    out["data_source_schemas"][name] = schema
        except Exception as e:  # one unreadable folder must not go unnoticed
            raise SystemExit(f"{folder}: {e}")
    if out["provider"] is None:
        raise SystemExit(f"{package_dir}: no provider class found")
    return out


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    schema = extract(sys.argv[1])
    tmp = sys.argv[2] + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(schema, f, sort_keys=True, separators=(",", ":"))
    os.replace(tmp, sys.argv[2])
    print(
        f"{sys.argv[2]}: {len(schema['resource_schemas'])} resources, "
        f"{len(schema['data_source_schemas'])} data sources"
    )


if __name__ == "__main__":
    main()
