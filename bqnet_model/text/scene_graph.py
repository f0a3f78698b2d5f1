"""The official scene-graph rules (the authors' spaCy-based ``sng_parser``), on plain token data.

Why it exists: the official pipeline uses the parse for two things. It decides whether
"This is an object . " is prepended to a caption (the text the model sees), and it gives the
token spans of the contrastive loss (main object, its modifiers, pronouns that refer to it,
other objects, relation words). A checkpoint trained with the official code expects the same
decisions, so the rules are reproduced here one by one, quirks included.

The rules run on :class:`Doc`, a list of :class:`Token` (text, lemma, tag, dependency, head) and
the noun chunks, so they can be tested on hand-made parses; ``Doc.from_spacy`` converts a spaCy
``Doc``. Token indices follow Python's list indexing as the original does: a few walks step to
``i - 1`` from token 0 and so read the *last* token, and that is kept.

Where the original would crash (an index past the end) or never return (a relation walk that
misses its root), :class:`SceneGraphParser` either raises :class:`ParseFailure` (``strict``) or
records the problem in ``SceneGraph.problems`` and goes on with the safe choice (no match, no
relation), so a product never hangs on a sentence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .vocab import OBJECT_CLASSES, OBJECT_NOUNS, PRONOUN_LEMMAS, SCENE_NOUNS

__all__ = ["Token", "Chunk", "Doc", "GraphNode", "GraphEdge", "SceneGraph", "SceneGraphParser", "ParseFailure"]

_SUBJECT_DEPS = ("nsubj", "nsubjpass", "attr")
_VERB_TAGS = ("VBN", "VBZ", "VBG")  # verbs a relation phrase skips ("is", "placed", "sitting")
_NOT_MODIFIER_TAGS = ("VBZ", "DT", "CC")  # collected as modifiers but never given a span


class ParseFailure(ValueError):
    """The official parser would crash (or hang) on this sentence."""


@dataclass(frozen=True)
class Token:
    i: int
    text: str
    lemma: str
    tag: str
    dep: str
    head: int  # index of the head token; a ROOT is its own head


@dataclass(frozen=True)
class Chunk:
    start: int
    end: int  # exclusive
    root: int


@dataclass
class Doc:
    text: str
    tokens: list[Token]
    chunks: list[Chunk]

    @classmethod
    def from_spacy(cls, doc: Any) -> "Doc":
        tokens = [Token(t.i, t.text, t.lemma_, t.tag_, t.dep_, t.head.i) for t in doc]
        chunks = [Chunk(c.start, c.end, c.root.i) for c in doc.noun_chunks]
        return cls(doc.text, tokens, chunks)

    def __len__(self) -> int:
        return len(self.tokens)

    def children(self, i: int) -> list[int]:
        """Dependents of token ``i`` in sentence order (spaCy's ``Token.children`` order)."""
        return [t.i for t in self.tokens if t.head == i and t.i != i]


@dataclass
class GraphNode:
    """One object (or scene) of the graph; spans are token indices (char spans come later)."""

    node_id: int
    target: str
    lemma_head: str
    node_type: str  # "Object" or "Scene"
    mod_text: list[str] = field(default_factory=list)
    target_tokens: list[int] = field(default_factory=list)
    mod_tokens: list[int] = field(default_factory=list)
    pron_tokens: list[int] = field(default_factory=list)
    rel_tokens: list[int] = field(default_factory=list)


@dataclass
class GraphEdge:
    obj_idx: int | None
    object: str
    relation: str
    relation_idx: list[int]
    sub_idx: int | None
    subject: str


@dataclass
class SceneGraph:
    nodes: list[GraphNode]
    edges: list[GraphEdge]
    problems: list[str] = field(default_factory=list)


@dataclass
class _Entity:
    chunk: Chunk
    head: str
    lemma_head: str
    head_idx: list[int]
    modifiers: list[int] = field(default_factory=list)
    kind: str = "None"
    ent_id: int | None = None
    repeat: bool = False


def _object_name(lemma: str) -> bool:
    return lemma in OBJECT_CLASSES or lemma in OBJECT_NOUNS or lemma.split(" ")[-1] in OBJECT_NOUNS


def _scene_name(lemma: str) -> bool:
    return lemma in SCENE_NOUNS or lemma.split(" ")[-1] in SCENE_NOUNS


class SceneGraphParser:
    """One parse of one :class:`Doc`: ``SceneGraphParser(doc, strict).parse() -> SceneGraph``."""

    def __init__(self, doc: Doc, strict: bool = True) -> None:
        self.doc = doc
        self.strict = strict
        self.problems: list[str] = []
        self.mask: list[int] = []

    # ------------------------------------------------------------------ helpers
    def _fail(self, message: str) -> None:
        if self.strict:
            raise ParseFailure(message)
        self.problems.append(message)

    def _tok(self, k: int) -> Token | None:
        """Python list indexing (negative counts from the end); out of range -> failure, None."""
        n = len(self.doc)
        if -n <= k < n:
            return self.doc.tokens[k]
        self._fail(f"token index {k} is out of range in a {n}-token sentence")
        return None

    # ------------------------------------------------------------------ the rules
    def parse(self) -> SceneGraph:
        doc = self.doc
        entities = [self._entity(c) for c in doc.chunks]
        kept = [e for e in entities if self._classify(e)]
        self.mask = [int(t.dep == "punct") for t in doc.tokens]
        main, ordered = self._order(kept)
        self._assign_ids(main, ordered)
        edges = self._relations(ordered)
        self._clause_modifiers(ordered)
        nodes = self._nodes(main, ordered)
        if main is None:
            self._special_main(nodes)
        if nodes and nodes[0].node_id == 0:
            nodes[0].rel_tokens = [i for e in edges if e.obj_idx == 0 for i in e.relation_idx]
        return SceneGraph(nodes, edges, self.problems)

    def _entity(self, chunk: Chunk) -> _Entity:
        """A noun chunk: compounds join the head ("coffee table"), det/num/adj become modifiers."""
        doc = self.doc
        root = doc.tokens[chunk.root]
        ent = _Entity(chunk, root.text, root.lemma, [root.i])
        for c in reversed(doc.children(root.i)):
            x = doc.tokens[c]
            if x.dep in ("det", "nummod"):
                ent.modifiers.append(x.i)
            elif x.dep == "amod":
                ent.modifiers.append(x.i)
                ent.modifiers.extend(y for y in doc.children(x.i) if doc.tokens[y].dep == "amod")
            elif x.dep == "compound":
                ent.head = f"{x.text} {ent.head}"
                ent.lemma_head = f"{x.lemma} {ent.lemma_head}"
                ent.head_idx = [x.i] + ent.head_idx
                ent.modifiers.extend(y for y in doc.children(x.i) if doc.tokens[y].dep in ("amod", "compound"))
        return ent

    def _classify(self, ent: _Entity) -> bool:
        """Object, Scene or Pron by lemma lists (in that order); False drops the chunk."""
        doc = self.doc
        root = doc.tokens[ent.chunk.root]
        heads = sorted(ent.head_idx)
        if (_object_name(root.lemma) or _object_name(ent.lemma_head)
                or any(_object_name(doc.tokens[i].lemma) for i in heads)):
            ent.kind = "Object"
        elif _scene_name(root.lemma):
            ent.kind = "Scene"
        elif root.lemma in PRONOUN_LEMMAS:
            ent.kind = "Pron"
        elif root.lemma == "top":
            before = self._tok(heads[-1] - 1)
            if before is None or before.text != "counter":
                return False
            ent.kind = "Object"  # "counter top": the parser misses this compound
            ent.head = f"{before.text} {ent.head}"
            ent.lemma_head = f"{before.lemma} {ent.lemma_head}"
            ent.head_idx = [before.i] + ent.head_idx
        else:
            return False
        return True

    def _order(self, kept: list[_Entity]) -> tuple[_Entity | None, list[_Entity]]:
        """Main object = first Object whose head is not wall/floor; it goes first, and pronouns
        before it are dropped. Every chunk's tokens are masked from later modifier search."""
        main, main_pos = None, 0
        for pos, ent in enumerate(kept):
            if ent.kind == "Object" and ent.lemma_head not in ("wall", "floor"):
                ent.ent_id, main, main_pos = 0, ent, pos
                break
        ordered = [main] if main is not None else []
        for pos, ent in enumerate(kept):
            c = ent.chunk
            self.mask[c.start:c.end] = [1] * (c.end - c.start)
            if main is not None and ((ent.kind == "Pron" and pos < main_pos) or pos == main_pos):
                continue
            ordered.append(ent)
        return main, ordered

    def _assign_ids(self, main: _Entity | None, ordered: list[_Entity]) -> None:
        """Pronouns (after the first chunk) and "the <main head>" repeats refer to node 0."""
        doc = self.doc
        next_id = 0
        for pos, ent in enumerate(ordered):
            root = doc.tokens[ent.chunk.root]
            if pos > 0 and ent.kind == "Pron":
                ent.ent_id = 0
            elif (main is not None and ent.kind == "Object" and ent.ent_id is None
                  and root.text == doc.tokens[main.chunk.root].text
                  and doc.tokens[root.i - 1].text == "the"):
                ent.ent_id, ent.repeat = 0, True
            elif ent.ent_id is None:
                next_id += 1
                ent.ent_id = next_id

    # ------------------------------------------------------------------ relations
    def _relations(self, ordered: list[_Entity]) -> list[GraphEdge]:
        doc = self.doc
        roots = [e.chunk.root for e in ordered]
        edges: list[GraphEdge] = []

        def add(obj: _Entity | None, obj_id: int | None, rel: str | None, idx: list[int], sub: _Entity) -> None:
            if rel is not None:
                head = obj.head if obj is not None else ordered[0].head
                edges.append(GraphEdge(obj_id, head, rel, idx, sub.ent_id, sub.head))

        for s, ent in enumerate(ordered):
            assigned = False
            root_tok, root_ent, root_conj, root_pos = self._find_root(ent, roots)
            anchor = root_tok if root_tok is not None else root_conj
            if anchor is not None and (root_tok is None or doc.tokens[root_tok].dep in ("ROOT", "ccomp")):
                # a subject of the clause's verb relates to this chunk through the verb's phrase
                for o, obj in enumerate(ordered):
                    r = doc.tokens[obj.chunk.root]
                    if r.head == anchor and r.dep in _SUBJECT_DEPS and o != s:
                        rel, idx = self._rel_by_root(anchor, ent)
                        assigned = True
                        add(obj, obj.ent_id, rel, idx, ent)
            elif root_tok is None and root_ent is not None:
                rel, idx = self._rel_by_entity(root_ent, ent)
                assigned = True
                obj = ordered[root_pos]
                add(obj, obj.ent_id, rel, idx, ent)
            if root_tok is not None and not assigned:
                # "... chair . placed between the other chairs": the omitted subject is node 0
                rt = doc.tokens[root_tok]
                if rt.i > 0 and doc.tokens[rt.i - 1].head != rt.i and rt.tag == "VBN":
                    rel, idx = self._rel_by_root(root_tok, ent)
                    add(None, 0, rel, idx, ent)
        return edges

    def _find_root(self, ent: _Entity, roots: list[int]) -> tuple[int | None, int | None, int | None, int | None]:
        """(clause root token, governing chunk root, conjoined verb, index of that chunk)."""
        doc = self.doc
        tmp = doc.tokens[ent.chunk.root]
        if tmp.dep == "conj" and tmp.head not in roots:
            return None, None, None, None
        for _ in range(10):
            head = doc.tokens[tmp.head]
            if head.i in roots and tmp.dep != "conj":
                return None, head.i, None, roots.index(head.i)
            if head.dep == "conj" and head.tag == "VBZ":
                return None, None, head.i, head.i
            if tmp.dep == "ccomp" and head.dep == "ROOT":
                return tmp.i, None, None, None
            if tmp.dep == "ROOT":
                return tmp.i, None, None, None
            tmp = head
        return None, None, None, None

    def _extend(self, rel: str | None, idx: list[int], t: Token, with_children: bool) -> tuple[str, list[int]]:
        """Prepend ``t`` to the relation phrase (verbs are skipped once a phrase exists)."""
        if rel is None:
            self.mask[t.i] = 1
            return t.text, [t.i] + idx
        if t.tag in _VERB_TAGS:
            return rel, idx
        self.mask[t.i] = 1
        rel, idx = f"{t.text} {rel}", [t.i] + idx
        if with_children:
            rel, idx = self._children_before(rel, idx, t)
        return rel, idx

    def _rel_by_root(self, root_i: int, ent: _Entity) -> tuple[str | None, list[int]]:
        """Walk up from the chunk's head to the clause root, collecting the relation words."""
        doc = self.doc
        start = doc.tokens[ent.chunk.root]
        cur = start.head
        if start.dep == "conj":  # "in front of a table and a bike": skip the first conjunct
            cur = doc.tokens[cur].head
        rel: str | None = None
        idx: list[int] = []
        for _ in range(len(doc) + 1):
            t = doc.tokens[cur]
            if t.i == root_i:
                if rel is None or t.tag not in _VERB_TAGS:
                    rel, idx = self._extend(rel, idx, t, with_children=False)
                else:
                    self.mask[t.i] = 1  # the root verb is masked though not part of the phrase
                return rel, idx
            rel, idx = self._extend(rel, idx, t, with_children=True)
            cur = t.head
        self._fail("a relation walk never reaches its clause root (the official parser loops forever)")
        return None, []

    def _rel_by_entity(self, root_ent: int, ent: _Entity) -> tuple[str | None, list[int]]:
        """Relation words between a chunk and the chunk that governs it (non-main clause)."""
        doc = self.doc
        cur = doc.tokens[ent.chunk.root].head
        rel: str | None = None
        idx: list[int] = []
        for _ in range(len(doc) + 1):
            if cur == root_ent:
                return rel, idx
            t = doc.tokens[cur]
            rel, idx = self._extend(rel, idx, t, with_children=True)
            cur = t.head
        self._fail("a relation walk never reaches its governing chunk (the official parser loops forever)")
        return None, []

    def _children_before(self, rel: str, idx: list[int], t: Token) -> tuple[str, list[int]]:
        """Dependents right before a relation word join it ("the left [side]"); up to 9."""
        for step in range(1, 10):
            k = t.i - step
            prev = self._tok(k)
            if prev is None or prev.head != t.i:
                break
            rel, idx = f"{prev.text} {rel}", [k] + idx  # the raw index, negative ones included
            self.mask[k] = 1
        return rel, idx

    # ------------------------------------------------------------------ modifiers and nodes
    def _clause_modifiers(self, ordered: list[_Entity]) -> None:
        """Unmasked words under the chunk's verb ("the chair is [black]") or under a preposition
        right after it ("a chair [with arms]") become modifiers, when there are at least two."""
        doc = self.doc
        n = len(doc)
        for ent in ordered:
            found: list[int] = []
            root = doc.tokens[ent.chunk.root]
            if doc.tokens[root.head].dep == "ROOT":
                found = self._subtree(root.head)
            if root.i < n - 1:
                nxt = doc.tokens[root.i + 1]
                if nxt.dep == "prep" and nxt.head == root.i:
                    found = self._subtree(nxt.i)
            if len(found) > 1:
                ent.modifiers.extend(found)

    def _subtree(self, first: int) -> list[int]:
        """``first`` (if unmasked) and its descendants through unmasked, non-EX tokens, sorted."""
        doc = self.doc
        found: list[int] = []
        todo = [first]
        while todo:
            i = todo.pop()
            for c in doc.children(i):
                if self.mask[c] == 0 and doc.tokens[c].tag != "EX":
                    found.append(c)
                    todo.append(c)
        if self.mask[first] == 0:
            found.append(first)
        return sorted(found)

    def _nodes(self, main: _Entity | None, ordered: list[_Entity]) -> list[GraphNode]:
        doc = self.doc
        nodes: list[GraphNode] = []
        for pos, ent in enumerate(ordered):
            mods = [m for m in ent.modifiers if doc.tokens[m].tag not in _NOT_MODIFIER_TAGS]
            if ent.kind != "Pron" and not ent.repeat:
                nodes.append(GraphNode(
                    node_id=ent.ent_id if ent.ent_id is not None else -1, target=ent.head,
                    lemma_head=ent.lemma_head, node_type=ent.kind, mod_text=[doc.tokens[m].text for m in mods],
                    target_tokens=list(ent.head_idx), mod_tokens=mods,
                ))
            elif main is not None and pos > 0 and nodes and ent.ent_id == 0:
                # a pronoun or a repeated "the <head>" adds its words to node 0
                nodes[0].pron_tokens.extend(ent.head_idx)
                nodes[0].mod_tokens.extend(mods)
                nodes[0].mod_text.extend(doc.tokens[m].text for m in mods)
        return nodes

    def _special_main(self, nodes: list[GraphNode]) -> None:
        """No main object found: "trash can", "urinal" or "cardboard" becomes node 0."""
        doc = self.doc
        for t in doc.tokens:
            if t.text == "trash":
                nxt = self._tok(t.i + 1)
                if nxt is not None and nxt.text == "can":
                    nodes.insert(0, GraphNode(0, "trash can", "trash can", "Object", target_tokens=[t.i, t.i + 1]))
                    return
            if t.text in ("urinal", "cardboard"):
                nodes.insert(0, GraphNode(0, t.text, t.text, "Object", target_tokens=[t.i]))
                return
