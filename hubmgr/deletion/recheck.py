"""What the registry itself says refers to a job's manifests, read right before their DELETEs.

The inventory learns of a new tag or index from the registry's notification, which may arrive
late or never (notifications not configured). So before each batch of DELETEs a job lists the
repository's tags again, resolves every tag it has not resolved in the last ``max_age``
seconds with a HEAD, and reads the content of any tagged index it does not know. An item that
a tag or an index outside the preview now refers to is kept; so is one that the protected-tag
rules in force protect (read again with each listing: a rule added while the job runs), by a
tag it has now or by the tag of an index that lists it (deletion.protection).

What remains open: a new tag pushed within ``list_every`` (1 s) of the DELETE; a tag moved
onto an item within ``max_age`` seconds of its DELETE (a tag name new to the listing is always
resolved); and an untagged index pushed by digest that refers to it, which only a
notification can reveal (the registry cannot list untagged manifests).
"""

import re
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

from hubmgr.inventory.models import IndexChild, Manifest
from hubmgr.registry.errors import ManifestInvalid

from .protection import Protection

_DIGEST = re.compile(r"sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128}")


class RegistryView:
    def __init__(self, client, repo, max_age=10.0, concurrency=8, list_every=1.0):
        self.client = client
        self.repo = repo
        self.max_age = max_age
        self.list_every = list_every  # seconds between two listings of the tags
        self.listed_at = None
        self.concurrency = concurrency
        self.tag_digest = {}  # tag -> digest, as the registry answered
        self.tags_of, self.indexes_of = {}, {}  # digest -> [tag]; child -> [(index, tag)]
        self.resolved_at = {}  # tag -> monotonic time of that answer
        self.children = {}  # digest -> frozenset of child digests (empty for an image)
        self.protection = Protection()

    def refresh(self):
        """List the tags and resolve the ones not resolved recently. Raises RegistryError.
        DELETE threads read the view meanwhile, so the new answers replace it whole. Batches
        come often; the tags are listed at most every ``list_every`` seconds."""
        now = time.monotonic()
        if self.listed_at is not None and now - self.listed_at < self.list_every:
            return
        listed = set(self.client.tags(self.repo.name))
        tag_digest = {t: d for t, d in self.tag_digest.items() if t in listed}
        resolved_at = {t: at for t, at in self.resolved_at.items() if t in listed}
        stale = [t for t in listed if now - resolved_at.get(t, -1e9) > self.max_age]
        if stale:
            with ThreadPoolExecutor(self.concurrency, thread_name_prefix="recheck") as pool:
                answers = list(pool.map(
                    lambda t: self.client.head_manifest(self.repo.name, t), stale))
            for tag, digest in zip(stale, answers):
                if digest is None:  # deleted between the listing and the HEAD
                    tag_digest.pop(tag, None)
                    resolved_at.pop(tag, None)
                else:
                    tag_digest[tag], resolved_at[tag] = digest, now
        self._learn_children(set(tag_digest.values()) - set(self.children))
        tags_of, indexes_of = defaultdict(list), defaultdict(list)
        for tag, digest in sorted(tag_digest.items()):
            tags_of[digest].append(tag)
            for child in self.children.get(digest, ()):
                indexes_of[child].append((digest, tag))
        self.tag_digest, self.resolved_at, self.listed_at = tag_digest, resolved_at, now
        self.tags_of, self.indexes_of = tags_of, indexes_of
        self.protection = Protection.current()

    def _learn_children(self, digests):
        """Children of the tagged manifests: from the inventory where it has read them (a
        manifest never changes), else from the registry."""
        if not digests:
            return
        read = set(Manifest.objects.filter(repository=self.repo, digest__in=list(digests),
                                           fetched=True).values_list("digest", flat=True))
        known = {d: set() for d in read}
        for index, child in IndexChild.objects.filter(
                index__repository=self.repo, index__digest__in=list(read)) \
                .values_list("index__digest", "child__digest"):
            known[index].add(child)
        for digest, kids in known.items():
            self.children[digest] = frozenset(kids)
        for digest in digests - read:
            fetched = self.client.get_manifest(self.repo.name, digest)
            try:
                manifest = fetched.parse()
                kids = {c.digest for c in manifest.children}
            except ManifestInvalid:
                # Unreadable: when in doubt, every digest it mentions counts as referenced.
                kids = set(_DIGEST.findall(fetched.body.decode("utf-8", "replace")))
            self.children[digest] = frozenset(kids)

    def why_keep(self, item) -> str:
        """Why the registry says ``item`` must stay, or '' if it is as the preview saw it."""
        tags_now = self.tags_of.get(item.digest, ())
        protected = self.protection.protects(self.repo.name, [*item.tags, *tags_now])
        if protected:
            return f"{protected}, in force at the deletion"
        for index, tag in self.indexes_of.get(item.digest, ()):
            protected = self.protection.protects(self.repo.name, [tag])
            if protected:
                return f"listed by index {index[:19]}, which has a {protected}"
        new_tags = [t for t in tags_now if t not in item.tags]
        if new_tags:
            return f"tagged since the preview: {', '.join(new_tags[:5])} (seen in the registry)"
        allowed = set(item.parents)
        for index, tag in self.indexes_of.get(item.digest, ()):
            if index not in allowed:
                return (f"referenced since the preview by index {index[:19]} (tag {tag}, "
                        "seen in the registry)")
        return ""
