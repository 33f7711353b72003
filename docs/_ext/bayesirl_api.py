"""Sphinx extension: the API reference, generated from the package at every build.

Nothing here lists a function by hand. At ``builder-inited`` the package is walked and one page
is written per public module (no part of its dotted name starts with ``_``): the module's
docstring, a summary table of its public names (its ``__all__``, or without one the public
functions and classes it defines), then the objects documented there.

Each object is documented once, at its shortest public address: ``bayesirl.TabularMDP`` rather
than ``bayesirl.core.TabularMDP`` or ``bayesirl.core.mdp.TabularMDP`` (on a tie, the module that
defines it; a constant always in the module that assigns it, where its ``#:`` comment lives).
The other modules that export it list it in their tables, linking there, so a re-export makes
no duplicate object description.

References (``missing-reference``): a name that Sphinx did not find (an annotation's
``bayesirl.core.mdp.TabularMDP``, a docstring's ``TabularMDP`` written inside
``bayesirl.core.demos``) is looked up the way the code around it would read it, and linked to
the page of the object it names. A name that exists but has no page (a private helper, a
constant left out of ``__all__``) is shown as code without a link. A name that exists nowhere
(a typo, a renamed or removed object) stays a warning, which ``-W`` makes an error.

The pages go to ``api/generated/`` (ignored by git), written only when their text changes;
pages of modules that no longer exist are deleted, so a renamed module leaves no stale page.
The docstring hooks at the end adapt autodoc and napoleon to this project's docstring style.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib
import inspect
import pkgutil
import re
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

from docutils import nodes
from sphinx import addnodes
from sphinx.util import logging

logger = logging.getLogger(__name__)

OUTPUT = Path("api") / "generated"  # relative to the source directory


@dataclass
class Entry:
    """One public name of one module: ``module.name`` is ``obj``."""

    module: str
    name: str
    obj: object
    kind: str  # "module" | "class" | "function" | "data"

    @property
    def address(self) -> str:
        return f"{self.module}.{self.name}"


@dataclass
class ApiMap:
    modules: dict[str, types.ModuleType] = field(default_factory=dict)  # public, walk order
    entries: dict[str, list[Entry]] = field(default_factory=dict)  # module -> its public names
    canonical: dict[object, str] = field(default_factory=dict)  # key(entry) -> address
    pages: dict[int, str] = field(default_factory=dict)  # id(module, class, function) -> page
    classes: list[type] = field(default_factory=list)  # every public class, once

    def page_of(self, entry: Entry) -> str | None:
        """The address where ``entry``'s object is documented, None when it has no page."""
        if entry.kind == "module":
            name = entry.obj.__name__
            return name if name in self.modules else None
        return self.canonical.get(_key(entry))


def _kind(obj) -> str:
    if inspect.ismodule(obj):
        return "module"
    if inspect.isclass(obj):
        return "class"
    if inspect.isroutine(obj) or (callable(obj) and hasattr(obj, "__wrapped__")):
        return "function"
    return "data"


def _key(entry: Entry):
    # A constant is one object under one name: small ints and strings are shared by identity
    # with unrelated constants, so the name is part of a constant's identity.
    return ("data", entry.name, id(entry.obj)) if entry.kind == "data" else id(entry.obj)


def _assigned_names(module) -> set[str]:
    """Top-level names that ``module``'s own source assigns (where a constant is defined)."""
    try:
        tree = ast.parse(inspect.getsource(module))
    except (OSError, TypeError, SyntaxError):
        return set()
    names = set()
    for node in tree.body:
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            targets = [node.target]
        for target in targets:
            for sub in ast.walk(target):
                if isinstance(sub, ast.Name):
                    names.add(sub.id)
    return names


def _walk(package_name: str) -> dict[str, types.ModuleType]:
    """Import the package's public modules, depth first; an import error is a build warning."""
    found = {}

    def visit(name):
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001  any failure to import is reported, not raised
            logger.warning("bayesirl_api: cannot import %s (%s: %s)", name,
                           type(exc).__name__, exc)
            return
        found[name] = module
        for info in pkgutil.iter_modules(getattr(module, "__path__", None) or []):
            if not info.name.startswith("_"):
                visit(f"{name}.{info.name}")

    visit(package_name)
    return found


def _public_names(module) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is not None:
        return list(names)
    return [name for name, obj in vars(module).items()
            if not name.startswith("_") and (inspect.isclass(obj) or inspect.isfunction(obj))
            and getattr(obj, "__module__", None) == module.__name__]


def build_map(package_name: str) -> ApiMap:
    api = ApiMap(modules=_walk(package_name))
    ranks = {}
    for order, (modname, module) in enumerate(api.modules.items()):
        assigned = None
        entries = []
        for name in _public_names(module):
            if not hasattr(module, name):
                logger.warning("bayesirl_api: %s.__all__ names %r, which it does not define",
                               modname, name)
                continue
            obj = getattr(module, name)
            entry = Entry(modname, name, obj, _kind(obj))
            entries.append(entry)
            if entry.kind == "module":
                continue
            if entry.kind == "data":
                if assigned is None:
                    assigned = _assigned_names(module)
                defines = name in assigned
                rank = (not defines, modname.count("."), order)
            else:
                defines = getattr(obj, "__module__", None) == modname
                rank = (modname.count("."), not defines, order)
            key = _key(entry)
            if key not in ranks or rank < ranks[key]:
                ranks[key] = rank
                api.canonical[key] = entry.address
        api.entries[modname] = entries
    api.pages = {id(module): name for name, module in api.modules.items()}
    for entries in api.entries.values():
        for entry in entries:
            if entry.kind in ("class", "function"):
                api.pages[id(entry.obj)] = api.canonical[_key(entry)]
            if entry.kind == "class" and entry.obj not in api.classes:
                api.classes.append(entry.obj)
    return api


# -- pages ---------------------------------------------------------------------------------------

def _title(text: str) -> str:
    return f"{text}\n{'=' * len(text)}\n"


def _table(heading: str, addresses: list[str]) -> list[str]:
    if not addresses:
        return []
    return [f".. rubric:: {heading}\n",
            ".. autosummary::\n   :nosignatures:\n\n"
            + "".join(f"   ~{address}\n" for address in addresses)]


def module_page(api: ApiMap, modname: str, shadowed: bool = False) -> str:
    """The module's docstring, a summary table per kind of public name (each row links to
    where the object is documented), then the objects whose address is in this module.

    One page per module, not per object: a theme's navigation tree costs (pages x entries), and
    a page per object made it most of the build's time. A module ``shadowed`` by an object of
    the same dotted name (a package that exports a function named like its module) is described
    without an index entry: the name is the object's."""
    entries = api.entries[modname]
    children = [name for name in api.modules if name.rpartition(".")[0] == modname]
    exported = [api.page_of(e) for e in entries if e.kind == "module"]
    out = [_title(modname),
           f".. automodule:: {modname}\n" + ("   :no-index:\n" if shadowed else ""),
           ".. currentmodule:: None\n"]  # the tables name objects absolutely
    out += _table("Modules", children + [m for m in exported if m and m not in children])
    for kind, heading in (("class", "Classes"), ("function", "Functions")):
        out += _table(heading, [api.page_of(e) for e in entries if e.kind == kind])
    here = [e for e in entries if e.kind != "module" and api.page_of(e) == e.address]
    if here:
        out.append("----\n")
    for entry in here:
        if entry.kind == "class":
            out.append(f".. autoclass:: {entry.address}\n   :members:\n   :show-inheritance:\n")
        elif entry.kind == "function":
            out.append(f".. autofunction:: {entry.address}\n")
    data = [e for e in entries if e.kind == "data"]
    if data:
        out.append(".. rubric:: Constants\n")
        out += [f".. autodata:: {e.address}\n" for e in data if api.page_of(e) == e.address]
        elsewhere = [api.page_of(e) for e in data if api.page_of(e) != e.address]
        if elsewhere:
            out.append("Also exported here: "
                       + ", ".join(f":data:`~{address}`" for address in elsewhere) + ".\n")
    if children:
        out.append(".. toctree::\n   :hidden:\n\n" + "".join(f"   {c}\n" for c in children))
    return "\n".join(out)


_MAPS: dict = {}  # app -> ApiMap of this build (rebuilt every build, never pickled)


def write_pages(app) -> None:
    api = build_map(app.config.bayesirl_api_package)
    _MAPS[app] = api
    objects = {api.page_of(e) for entries in api.entries.values() for e in entries
               if e.kind in ("class", "function")}
    # a package may export a function named like its module (decisions.counterfactual)
    pages = {name: module_page(api, name, shadowed=name in objects) for name in api.modules}
    outdir = Path(app.srcdir) / OUTPUT
    outdir.mkdir(parents=True, exist_ok=True)
    for stale in outdir.glob("*.rst"):
        if stale.stem not in pages:
            stale.unlink()
    for name, text in pages.items():
        path = outdir / f"{name}.rst"
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")


# -- references ----------------------------------------------------------------------------------

def _walk_path(parts: list[str], start) -> list | None:
    """The objects that ``start.parts[0].parts[1]...`` passes through, or None."""
    chain = [start]
    for part in parts:
        try:
            chain.append(getattr(chain[-1], part))
        except AttributeError:
            return None
    return chain[1:]


def _absolute(path: str) -> tuple[list, list[str]] | None:
    """(objects, names) along a dotted ``path`` from its longest imported module prefix."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        head = ".".join(parts[:i])
        if head in sys.modules:
            chain = _walk_path(parts[i:], sys.modules[head])
            return None if chain is None else ([sys.modules[head], *chain], [head, *parts[i:]])
    return None


def _home(obj):
    """The module whose source holds ``obj`` (a function, class, method or property)."""
    obj = getattr(obj, "fget", None) or getattr(obj, "__func__", None) or obj
    return sys.modules.get(getattr(obj, "__module__", None) or "")


def _contexts(node) -> list:
    """Where a name in this reference is read from, as the code around it would read it: the
    documented class, the module of the page, and the module whose source holds the docstring."""
    found = []
    module, cls = node.get("py:module"), node.get("py:class")
    if module and cls:
        owner = _absolute(f"{module}.{cls}")
        if owner is not None:
            found.append(owner[0][-1])
    if module in sys.modules:
        found.append(sys.modules[module])
    documented = None
    source = str(node.source or getattr(node.parent, "source", None) or "")
    if "docstring of " in source:
        documented = _absolute(source.rpartition("docstring of ")[2].strip())
    else:  # a summary in an autosummary table: read it where the row's object lives
        row = node.parent
        while row is not None and not isinstance(row, nodes.row):
            row = row.parent
        if row is not None:
            first = row.next_node(lambda n: isinstance(n, (nodes.reference, addnodes.pending_xref)))
            name = (first.get("reftitle") or first.get("reftarget")) if first else None
            documented = _absolute(name) if name else None
    if documented is not None:
        found += [_home(obj) for obj in reversed(documented[0][1:]) if _home(obj)][:1]
        if inspect.isclass(documented[0][-1]):
            found.append(documented[0][-1])
    return found


def _page_for(obj, pages: dict[int, str]) -> str | None:
    """The page of ``obj``, or of the class whose attribute it is (a method, a property)."""
    if id(obj) in pages:
        return pages[id(obj)]
    func = getattr(obj, "fget", None) or getattr(obj, "__func__", None) or obj
    owner_name, _, attr = getattr(func, "__qualname__", "").rpartition(".")
    home = _home(func)
    if owner_name and home is not None and "<" not in owner_name:
        owner = _walk_path(owner_name.split("."), home)
        if owner is not None and id(owner[-1]) in pages:
            return f"{pages[id(owner[-1])]}.{attr}"
    return None


def resolve_elsewhere(app, env, node, contnode):
    """Resolve a Python reference that Sphinx missed through the page of the object it names."""
    api = _MAPS.get(app)
    target = node.get("reftarget", "")
    if api is None or node.get("refdomain") != "py" or not target:
        return None
    contexts = _contexts(node)
    readings = [_absolute(target)]
    readings += [(chain, target.split("."))
                 for chain in (_walk_path(target.split("."), c) for c in contexts)
                 if chain is not None]
    domain = env.get_domain("py")
    for reading in readings:
        if reading is None:
            continue
        chain, names = reading
        # the last object along the path that has a page, plus the names after it
        for i in range(len(chain) - 1, -1, -1):
            page = _page_for(chain[i], api.pages)
            if page is None:
                continue
            new = ".".join([page, *names[i + 1:]])
            if new != target:
                found = domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"],
                                            new, node, contnode)
                if found is not None:
                    return found
            break
    # last, a name that ends exactly one documented object's address (a docstring naming a
    # class that its module imports only for type checking, say)
    suffix = "." + target.lstrip(".~")
    matches = {name for name, entry in domain.objects.items()
               if name.endswith(suffix) and not entry.aliased}  # aliased: autodoc's :canonical:
    if len(matches) == 1:
        found = domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"],
                                    matches.pop(), node, contnode)
        if found is not None:
            return found
    # A name that exists in the package but has no page (a private helper, a constant left out
    # of __all__, an undocumented method) is shown as code without a link; only a name that
    # exists nowhere (a typo, a renamed or removed object) stays a warning.
    head, _, rest = target.lstrip(".~").partition(".")
    classes = [obj for obj in api.classes if obj.__name__ == head]  # Target.potential, from a
    if len(classes) == 1 and rest:  # module that names the class without importing it
        contexts.append(classes[0])
        readings.append(_walk_path(rest.split("."), classes[0]))
    if any(reading is not None for reading in readings) or _instance_attribute(target, contexts):
        logger.verbose("bayesirl_api: %s %r exists but has no page: shown without a link",
                       node["reftype"], target, location=node)  # listed by sphinx-build -v
        return contnode
    return None


def _instance_attribute(target: str, contexts: list) -> bool:
    """Whether ``target`` (``name`` or ``Class.name``) is an attribute that a class's own code
    assigns (``self.name = ...``) or annotates, read from the classes around the reference."""
    owner_path, _, name = target.rpartition(".")
    classes = []
    for context in contexts:
        chain = _walk_path(owner_path.split("."), context) if owner_path else [context]
        if chain and inspect.isclass(chain[-1]):
            classes.append(chain[-1])
    absolute = _absolute(owner_path) if owner_path else None
    if absolute is not None and inspect.isclass(absolute[0][-1]):
        classes.append(absolute[0][-1])
    return any(name in _assigned_attributes(klass)
               for cls in classes for klass in inspect.getmro(cls))


def _assigned_attributes(cls) -> set[str]:
    """The attributes ``cls`` annotates, or that code in its module assigns to ``self``."""
    names = set(getattr(cls, "__annotations__", {}))
    try:
        names |= _self_assignments(inspect.getsourcefile(cls))
    except TypeError:  # a builtin
        pass
    return names


@functools.cache
def _self_assignments(path: str | None) -> frozenset[str]:
    """Every ``self.name = ...`` (or frozen ``object.__setattr__(self, "name", ...)``) in a
    source file: a regular expression over the file, not a parse per class (much faster)."""
    try:
        source = Path(path).read_text(encoding="utf-8")
    except (TypeError, OSError):
        return frozenset()
    return frozenset(re.findall(r"\bself\.(\w+)\s*(?::[^=\n]*)?=(?!=)", source)
                     + re.findall(r"object\.__setattr__\(self,\s*[\"'](\w+)[\"']", source))


def drop_type_docstrings(app, what, name, obj, options, lines):
    """A constant without a ``#:`` comment would show its type's docstring (a dict's, in
    reStructuredText that does not parse); show its value alone instead."""
    if what in ("data", "attribute") and not inspect.isclass(obj) and not callable(obj):
        inherited = getattr(type(obj), "__doc__", None)
        inherited = inspect.cleandoc(inherited) if isinstance(inherited, str) else ""
        if inherited and "\n".join(lines).strip() == inherited.strip():
            lines[:] = []


_COMBINED = re.compile(r"^(\s*):ivar ([\w.]+(?:, [\w.]+)+):(.*)$")


def split_combined_fields(app, what, name, obj, options, lines):
    """``a, b: text`` in an "Attributes:" section documents both; napoleon splits such entries
    of "Args:" but writes ``:ivar a, b:`` for attributes, which reads ``a,`` as a type."""
    out, i = [], 0
    while i < len(lines):
        match = _COMBINED.match(lines[i])
        if match is None:
            out.append(lines[i])
            i += 1
            continue
        indent, names, first = match.groups()
        body = [first]
        i += 1
        while i < len(lines) and lines[i].startswith(indent + " ") and lines[i].strip():
            body.append(lines[i])
            i += 1
        for field_name in names.split(", "):
            out.append(f"{indent}:ivar {field_name}:{body[0]}")
            out.extend(body[1:])
    lines[:] = out


_PROSE = re.compile(r"^[A-Z][a-z]+(?:[ ,]+[\w()'-]+)+$")


def keep_prose_first_lines(app, what, name, obj, options, lines):
    """Napoleon reads the first line of a property's docstring as ``type: description``; this
    project writes ``Parameter draws with chains flattened: (chains * draws, ...)``, a phrase
    and its detail. Where napoleon made a type of such a phrase, put the line back together."""
    if what not in ("property", "attribute"):
        return
    for i, line in enumerate(lines):
        if line.startswith(":type: ") and _PROSE.match(line[len(":type: "):].strip()):
            phrase = line[len(":type: "):].strip()
            del lines[i]
            if lines and lines[0].strip():
                lines[0] = f"{phrase}: {lines[0].lstrip()}"
            else:
                lines.insert(0, phrase)
            while lines and not lines[-1].strip():
                lines.pop()
            return



def _provider(cls, name):
    """The class in ``cls``'s MRO whose own attribute ``name`` carries the docstring."""
    for base in inspect.getmro(cls):
        attr = vars(base).get(name)
        if attr is not None:
            doc = getattr(getattr(attr, "__func__", attr), "__doc__", None)
            if doc:
                return base
    return None


def skip_foreign_docstrings(app, what, name, obj, skip, options):
    """A method that bayesirl overrides without a docstring (``forward`` of a
    ``torch.autograd.Function``) would show the base library's docstring, whose references
    point into that library's documentation: leave such members out."""
    if skip or what != "class":
        return None
    func = getattr(obj, "__func__", None) or getattr(obj, "fget", None) or obj
    if getattr(func, "__doc__", None) or not inspect.isroutine(func):
        return None
    owner_name = getattr(func, "__qualname__", "").rpartition(".")[0]
    home = _home(func)
    owner = _walk_path(owner_name.split("."), home) if owner_name and home else None
    if owner and inspect.isclass(owner[-1]):
        provider = _provider(owner[-1], name)
        if provider is not None and not provider.__module__.startswith("bayesirl"):
            return True
    return None


def factory_defaults(app, what, name, obj, options, signature, return_annotation):
    """A dataclass field's ``default_factory`` shows as ``<factory>``, which is no Python
    expression: Sphinx then splits the signature at every comma (``dict[str, Any]`` into
    ``dict[str``). Show the factory's call instead."""
    if what != "class" or not signature or "<factory>" not in signature:
        return None
    if dataclasses.is_dataclass(obj):
        for item in dataclasses.fields(obj):
            if item.default_factory is not dataclasses.MISSING:
                call = f"{getattr(item.default_factory, '__qualname__', 'factory')}()"
                # the first "=" after a field's name is its own default
                signature = re.sub(rf"(\b{item.name}\b[^=]*=\s*)<factory>", rf"\g<1>{call}",
                                   signature, count=1)
    return signature.replace("<factory>", "..."), return_annotation


def drop_object_base(app, name, obj, options, bases):
    """``Bases: object`` says nothing; keep the line for real base classes only."""
    if list(bases) == [object]:
        bases.clear()


def _balanced_summary(extract):
    """Wrap autosummary's ``extract_summary``, which cuts the first sentence at a period that
    may sit inside inline literal text (``phi . theta``) and checks the whole paragraph rather
    than the cut for broken markup: extend such a cut to the next sentence end that closes it."""

    def extract_summary(doc, settings):
        summary = extract(doc, settings)
        if summary.count("``") % 2 == 0:
            return summary
        stanza = []  # the first paragraph, joined as autosummary joins it
        for line in doc:
            if line.strip():
                stanza.append(line)
            elif stanza:
                break
        text = " ".join(stanza)
        if not text.startswith(summary[:-1]):
            return summary
        end = len(summary) - 1
        while summary.count("``") % 2:
            found = re.search(r"\.(\s|$)", text[end + 1:])
            if found is None:
                return text
            end += 1 + found.start()
            summary = text[:end + 1]
        return summary

    return extract_summary


def setup(app):
    from sphinx.ext import autosummary  # its Autosummary directive calls this module global

    if not getattr(autosummary.extract_summary, "balanced", False):
        autosummary.extract_summary = _balanced_summary(autosummary.extract_summary)
        autosummary.extract_summary.balanced = True

    app.add_config_value("bayesirl_api_package", "bayesirl", "env")
    app.connect("builder-inited", write_pages)
    app.connect("missing-reference", resolve_elsewhere)
    app.connect("autodoc-process-docstring", drop_type_docstrings, priority=100)  # before napoleon
    app.connect("autodoc-process-docstring", split_combined_fields, priority=900)  # after it
    app.connect("autodoc-process-docstring", keep_prose_first_lines, priority=900)
    app.connect("autodoc-skip-member", skip_foreign_docstrings)
    app.connect("autodoc-process-signature", factory_defaults)
    app.connect("autodoc-process-bases", drop_object_base)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
