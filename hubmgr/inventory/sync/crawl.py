"""Concurrent reads from the registry for one repository. Network only: no database here.

Every digest is fetched at most once (manifests and blobs are immutable); tags whose digest we
already know are checked with a HEAD. Failures are collected per reference, never raised, so
one bad manifest does not stop the rest.

Referrers (OCI 1.1 manifests whose ``subject`` is another manifest) that no tag reaches are
found through the registry's referrers API, where it has one: each manifest this crawl reads
(new content only) is asked for its referrers, and those not known yet are fetched like any
digest; the inventory attaches them by their own ``subject`` field. Which registries have the
API is learned once per Crawler: the first referrers request goes alone, and a 404 (what the
spec says a registry without the API answers, distribution 2.8 among them) means no more are
sent. Elsewhere the referrers fallback tags and push notifications are the sources. What this
misses: a referrer pushed by digest only, later than its subject was read, on a registry that
sends no notifications, is found only when its subject is read again (a new read_version),
since known manifests are not asked on every sync.
"""

import logging
import queue
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from hubmgr.registry.artifacts import IMAGE_CONFIGS, MAX_DEPTH
from hubmgr.registry.errors import RegistryError, RegistryNotFound
from hubmgr.registry.manifests import ImageConfig, Manifest, parse_config

log = logging.getLogger("hubmgr.sync")
# Referrers fetched for one subject at most: a subject with 10,000 referrers costs only itself,
# and the rest are listed as a problem (notifications still bring each of them).
MAX_REFERRERS_FETCHED = 500
# Referrers requests that fail before the registry said whether it has the API: past this
# many, the crawler stops asking, with one problem, instead of one per manifest.
MAX_PROBE_FAILURES = 3


@dataclass
class Fetched:
    digest: str
    media_type: str = ""
    manifest: Manifest | None = None
    error: str = ""


@dataclass
class CrawlResult:
    tag_digests: dict = field(default_factory=dict)  # tag -> digest
    tag_errors: dict = field(default_factory=dict)  # tag -> error message
    tags_gone: set = field(default_factory=set)  # listed, then 404 on HEAD
    missing: set = field(default_factory=set)  # digests the registry answered 404 for
    fetched: dict = field(default_factory=dict)  # digest -> Fetched
    configs: dict = field(default_factory=dict)  # config digest -> ImageConfig
    problems: list = field(default_factory=list)  # [{"reference", "error"}]
    requests: int = 0


class Crawl:
    """One crawl in flight: its requests are queued in the crawler's pool."""

    def __init__(self, repository, known, context):
        self.repository = repository
        self.known = set(known)
        self.context = context
        self.result = CrawlResult()
        self.pending = 0  # requests queued or running
        self.done = queue.SimpleQueue()  # their futures, as they complete
        self.wanted = set()  # digests fetched, in flight or being looked up
        self.configs_wanted = set()
        self.check = set()  # digests to look up before fetching
        self.check_configs = set()
        self.probing = False  # a referrers request is out while the API's support is unknown
        self.asking = []  # digests whose referrers wait for that answer
        self.depth = {}  # digest wanted as a referrer -> how many subjects up to a non-referrer


class Crawler:
    """``lookup(context, digests, config_digests) -> (known digests, {config digest:
    ImageConfig})``, when given, is asked in batches, on the thread that calls ``finish``,
    what the inventory already read, before anything unknown is fetched."""

    LOOKUP_BATCH = 200

    def __init__(self, client, concurrency=8, config_cache=None, on_tag=None, lookup=None):
        self.client = client
        self.concurrency = concurrency
        self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="crawl")
        self.config_cache = config_cache if config_cache is not None else {}
        self.on_tag = on_tag or (lambda: None)
        self.lookup = lookup
        # Whether the registry answers the referrers API: None until it said (see the module
        # docstring), then True or False for every crawl of this crawler.
        self.referrers_api = None
        self.probe_failures = 0

    def close(self):
        self.pool.shutdown(wait=True)

    def crawl(self, repository, tags, known, digests=()) -> CrawlResult:
        """Resolve ``tags`` ({tag: digest we had or None}) and ``digests`` in ``repository``.

        ``known`` is the set of digests already read into the inventory: they are not fetched
        again. Children of new indexes and configs of new images are fetched too.
        """
        return self.finish(self.start(repository, tags, known, digests))

    def start(self, repository, tags, known, digests=(), context=None) -> Crawl:
        """Queue the first requests of a crawl (see ``crawl``) and return at once."""
        crawl = Crawl(repository, known, context)
        for tag, had in tags.items():
            if had and had in crawl.known:
                self._submit(crawl, self._head, "head", repository, tag)
            else:
                self._submit(crawl, self._get, "get", repository, tag, tag)
        for digest in digests:
            self._want(crawl, digest)
        return crawl

    def finish(self, crawl) -> CrawlResult:
        """Wait for a crawl started by ``start``, queueing what its answers lead to."""
        result, repository = crawl.result, crawl.repository
        while crawl.pending or crawl.check or crawl.check_configs:
            waiting = len(crawl.check) + len(crawl.check_configs)
            if waiting and (waiting >= self.LOOKUP_BATCH or crawl.pending < self.concurrency):
                self._look_up(crawl)
            if not crawl.pending:
                continue
            # Completions arrive on a queue: waiting costs the same with 10 or 10,000 in flight.
            done = [crawl.done.get()]
            while not crawl.done.empty():
                done.append(crawl.done.get())
            crawl.pending -= len(done)
            for future in done:
                kind, ref, value, error = future.result()
                if kind == "head":
                    self.on_tag()
                    if error:
                        result.tag_errors[ref] = error
                        result.problems.append({"reference": f"{repository}:{ref}",
                                                "error": error})
                    elif value is None:
                        result.tags_gone.add(ref)
                    else:
                        result.tag_digests[ref] = value
                        self._want(crawl, value)
                elif kind == "get":
                    tag, reference = ref
                    if tag is not None:
                        self.on_tag()
                    if error:
                        if tag is not None:
                            result.tag_errors[tag] = error
                        else:
                            result.fetched[reference] = Fetched(reference, error=error)
                        result.problems.append({"reference": f"{repository}:{tag}" if tag
                                                else f"{repository}@{reference}", "error": error})
                        continue
                    if value is None:  # 404: the tag or digest is gone
                        if tag is not None:
                            result.tags_gone.add(tag)
                        else:
                            result.missing.add(reference)
                        continue
                    fetched = value
                    crawl.wanted.add(fetched.digest)
                    result.fetched[fetched.digest] = fetched
                    if tag is not None:
                        result.tag_digests[tag] = fetched.digest
                    manifest = fetched.manifest
                    if manifest is None:  # served, but not readable: why, as a problem
                        result.problems.append({"reference": f"{repository}@{fetched.digest}",
                                                "error": fetched.error})
                        continue
                    for child in manifest.children:
                        self._want(crawl, child.digest)
                    cfg = manifest.config
                    if cfg and cfg.media_type in IMAGE_CONFIGS:  # not an artifact's config
                        self._want_config(crawl, cfg.digest)
                    self._ask_referrers(crawl, fetched.digest)
                elif kind == "referrers":
                    self._referrers_listed(crawl, ref, value, error)
                elif kind == "config":
                    if error:
                        result.problems.append({"reference": f"{repository}@{ref}",
                                                "error": f"image config: {error}"})
                        value = ImageConfig()
                    result.configs[ref] = value
        return result

    def _submit(self, crawl, fn, kind, *args):
        crawl.pending += 1
        self.pool.submit(_guard, fn, kind, *args).add_done_callback(crawl.done.put)
        crawl.result.requests += 1

    def _want(self, crawl, digest):
        if digest in crawl.known or digest in crawl.wanted:
            return
        crawl.wanted.add(digest)
        if self.lookup:
            crawl.check.add(digest)
        else:
            self._submit(crawl, self._get, "get", crawl.repository, digest, None)

    def _want_config(self, crawl, digest):
        if digest in crawl.configs_wanted or digest in crawl.result.configs:
            return
        crawl.configs_wanted.add(digest)
        if digest in self.config_cache:
            crawl.result.configs[digest] = self.config_cache[digest]
        elif self.lookup:
            crawl.check_configs.add(digest)
        else:
            self._submit(crawl, self._config, "config", crawl.repository, digest)

    def _ask_referrers(self, crawl, digest):
        """Ask for the referrers of a manifest this crawl read, unless the registry has no
        referrers API, or ``digest`` is itself a referrer MAX_DEPTH levels down.
        While support is unknown, one request at a time (the probe) and the rest wait."""
        if self.referrers_api is False:
            return
        if crawl.depth.get(digest, 0) >= MAX_DEPTH:
            crawl.result.problems.append({
                "reference": f"{crawl.repository}@{digest}",
                "error": f"referrers: reached through {MAX_DEPTH} levels of "
                         "referrers; hubmgr does not ask for more below it"})
            return
        if self.referrers_api is None:
            if crawl.probing:
                crawl.asking.append(digest)
                return
            crawl.probing = True
        self._submit(crawl, self._referrers, "referrers", crawl.repository, digest)

    def _referrers_listed(self, crawl, subject, listing, error):
        """The registry's answer for ``subject``'s referrers: learn whether it has the API
        (the first answer that is not an error says), and fetch the referrers not known yet,
        up to MAX_REFERRERS_FETCHED. Every failure is ``subject``'s problem."""
        result, reference = crawl.result, f"{crawl.repository}@{subject}"
        was_probe, crawl.probing = crawl.probing, False
        if error:
            result.problems.append({"reference": reference, "error": f"referrers: {error}"})
            if was_probe:
                self.probe_failures += 1
                if self.probe_failures >= MAX_PROBE_FAILURES:
                    self.referrers_api = False
                    result.problems.append({"reference": crawl.repository, "error": (
                        f"referrers: the first {MAX_PROBE_FAILURES} referrers requests "
                        "failed; hubmgr does not ask again in this run")})
        elif listing is None:
            self.referrers_api = False
        else:
            self.referrers_api = True
            new = [d.digest for d in listing.descriptors
                   if d.digest not in crawl.known and d.digest not in crawl.wanted]
            depth = crawl.depth.get(subject, 0) + 1
            for digest in new[:MAX_REFERRERS_FETCHED]:
                crawl.depth[digest] = depth
                self._want(crawl, digest)
            if len(new) > MAX_REFERRERS_FETCHED:
                result.problems.append({"reference": reference, "error": (
                    f"referrers: {len(new)} referrers of this manifest were not read yet; "
                    f"hubmgr read {MAX_REFERRERS_FETCHED} of them and left the others out")})
            if not listing.complete:
                result.problems.append({"reference": reference, "error": (
                    f"referrers: the registry lists more than {len(listing.descriptors)} "
                    "referrers of this manifest; hubmgr read no further")})
        waiting, crawl.asking = crawl.asking, []
        for digest in waiting:
            self._ask_referrers(crawl, digest)

    def _look_up(self, crawl):
        digests, configs = crawl.check, crawl.check_configs
        crawl.check, crawl.check_configs = set(), set()
        known, read = self.lookup(crawl.context, digests, configs)
        crawl.known |= known
        crawl.result.configs.update(read)
        for digest in sorted(digests - known):
            self._submit(crawl, self._get, "get", crawl.repository, digest, None)
        for digest in sorted(configs - set(read)):
            self._submit(crawl, self._config, "config", crawl.repository, digest)

    def exists(self, repository, digests) -> dict:
        """HEAD each digest: {digest: True (present) | False (404) | error message}."""
        futures = {self.pool.submit(_guard, self._head, "head", repository, d): d
                   for d in digests}
        out = {}
        for future, digest in futures.items():
            _, _, value, error = future.result()
            out[digest] = error or (value is not None)
        return out

    # Each returns (kind, ref, value, error) and runs in a worker thread.
    def _head(self, repository, reference):
        return "head", reference, self.client.head_manifest(repository, reference), ""

    def _get(self, repository, reference, tag):
        try:
            raw = self.client.get_manifest(repository, reference)
        except RegistryNotFound:
            return "get", (tag, reference), None, ""
        except RegistryError as exc:
            return "get", (tag, reference), None, str(exc)
        fetched = Fetched(raw.digest, raw.media_type)
        try:
            fetched.manifest = raw.parse()
        except RegistryError as exc:
            fetched.error = str(exc)
        else:
            if not fetched.manifest.sizes_known:  # (Docker schema1: no sizes in it)
                fetched.manifest = None
                fetched.error = (f"manifest {raw.digest} is a Docker schema1 manifest, whose "
                                 "layer sizes hubmgr does not read yet: kept as unread")
        return "get", (tag, reference), fetched, ""

    def _referrers(self, repository, digest):
        return "referrers", digest, self.client.referrers(repository, digest), ""

    def _config(self, repository, digest):
        return "config", digest, parse_config(self.client.get_blob(repository, digest)), ""


def _guard(fn, kind, repository, reference, *rest):
    """Run one request; any failure becomes that reference's error, never the crawl's."""
    ref = (rest[0], reference) if kind == "get" else reference
    try:
        return fn(repository, reference, *rest)
    except RegistryError as exc:
        return kind, ref, None, str(exc)
    except Exception as exc:  # noqa: BLE001 - a poison answer costs only its own reference
        log.exception("crawl repository=%s reference=%s failed", repository, reference)
        return kind, ref, None, f"unexpected error: {type(exc).__name__}: {exc}"
