"""inferd - Python client for inferd, the local LLM inference daemon.

A thin ctypes layer over libinfer (the C client library, libinfer.so.0):
no dependencies beyond the standard library.

    import inferd
    with inferd.Client() as c:                 # default socket
        for piece in c.generate("llama", "Once upon a time", max_tokens=32):
            print(piece.text, end="", flush=True)

generate() streams: it returns a Generation, an iterator of Piece(token,
text) that reads the daemon's frames as you iterate (libinfer's
non-blocking API, polled here); after the last piece, .result holds the
finish reason, token counts and timings. Leaving the loop early cancels
the request. complete() returns the whole text at once.

The library is found through $INFER_LIB, then libinfer.so.0 on the
loader's path (ctypes.util.find_library as a last resort).
"""
import ctypes
import ctypes.util
import json
import os
import select
from collections import deque, namedtuple

__all__ = ["Client", "Generation", "Piece", "InferError", "library_version"]

Piece = namedtuple("Piece", "token text")


def _load():
    names = [os.environ.get("INFER_LIB"), "libinfer.so.0",
             ctypes.util.find_library("infer")]
    errs = []
    for n in names:
        if not n:
            continue
        try:
            return ctypes.CDLL(n)
        except OSError as e:
            errs.append(str(e))
    raise ImportError("cannot load libinfer (set INFER_LIB): " + "; ".join(errs))


_lib = _load()
# What libinfer returns is freed by libinfer's own free (infer_free): the
# process's free() may be an interposed allocator's (ASan, jemalloc).
_free = _lib.infer_free
_free.argtypes = [ctypes.c_void_p]
_free.restype = None


class _Message(ctypes.Structure):
    _fields_ = [("role", ctypes.c_char_p), ("content", ctypes.c_char_p)]


class _GenParams(ctypes.Structure):  # infer_gen_params, field for field
    _fields_ = [
        ("model", ctypes.c_char_p),
        ("prompt", ctypes.c_char_p),
        ("messages", ctypes.POINTER(_Message)),
        ("n_messages", ctypes.c_size_t),
        ("system", ctypes.c_char_p),
        ("chat_template", ctypes.c_char_p),
        ("max_tokens", ctypes.c_int),
        ("temperature", ctypes.c_float),
        ("top_k", ctypes.c_int),
        ("top_p", ctypes.c_float),
        ("min_p", ctypes.c_float),
        ("repeat_penalty", ctypes.c_float),
        ("freq_penalty", ctypes.c_float),
        ("presence_penalty", ctypes.c_float),
        ("penalty_last_n", ctypes.c_int),
        ("seed", ctypes.c_int64),
        ("stop", ctypes.POINTER(ctypes.c_char_p)),
        ("n_stop", ctypes.c_size_t),
        ("ignore_eos", ctypes.c_int),
        ("keep_alive", ctypes.c_int),
    ]


class _GenResult(ctypes.Structure):  # infer_gen_result
    _fields_ = [
        ("finish", ctypes.c_char * 16),
        ("prompt_tokens", ctypes.c_int),
        ("gen_tokens", ctypes.c_int),
        ("ttft_ms", ctypes.c_double),
        ("total_ms", ctypes.c_double),
        ("tok_s", ctypes.c_double),
    ]


_TOKEN_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int32,
                             ctypes.c_void_p, ctypes.c_size_t)
_DONE_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int,
                            ctypes.POINTER(_GenResult))

_P = ctypes.c_void_p
_sigs = {
    "infer_version": ([], ctypes.c_char_p),
    "infer_strerror": ([ctypes.c_int], ctypes.c_char_p),
    "infer_connect": ([ctypes.POINTER(_P), ctypes.c_char_p, ctypes.c_char_p,
                       ctypes.c_size_t], ctypes.c_int),
    "infer_close": ([_P], None),
    "infer_errmsg": ([_P], ctypes.c_char_p),
    "infer_ping": ([_P], ctypes.c_int),
    "infer_status": ([_P, ctypes.POINTER(ctypes.c_void_p)], ctypes.c_int),
    "infer_models": ([_P, ctypes.POINTER(ctypes.c_void_p)], ctypes.c_int),
    "infer_metrics": ([_P, ctypes.POINTER(ctypes.c_void_p)], ctypes.c_int),
    "infer_load": ([_P, ctypes.c_char_p, ctypes.c_int], ctypes.c_int),
    "infer_unload": ([_P, ctypes.c_char_p], ctypes.c_int),
    "infer_tokenize": ([_P, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int,
                        ctypes.c_int, ctypes.POINTER(ctypes.c_void_p)],
                       ctypes.c_int),
    "infer_detokenize": ([_P, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int32),
                          ctypes.c_size_t, ctypes.POINTER(ctypes.c_void_p)],
                         ctypes.c_int),
    "infer_gen_params_init": ([ctypes.POINTER(_GenParams)], None),
    "infer_generate_async": ([_P, ctypes.POINTER(_GenParams), _TOKEN_FN,
                              _DONE_FN, ctypes.c_void_p,
                              ctypes.POINTER(ctypes.c_uint32)], ctypes.c_int),
    "infer_cancel": ([_P, ctypes.c_uint32], ctypes.c_int),
    "infer_fd": ([_P], ctypes.c_int),
    "infer_want_write": ([_P], ctypes.c_int),
    "infer_process": ([_P], ctypes.c_int),
}
for _name, (_args, _res) in _sigs.items():
    _f = getattr(_lib, _name)
    _f.argtypes = _args
    _f.restype = _res

KEEP_DEFAULT = -1000  # INFER_KEEP_DEFAULT


def library_version():
    """Version of the loaded libinfer, e.g. "0.1.0"."""
    return _lib.infer_version().decode()


class InferError(Exception):
    """A libinfer failure: .code is the negative INFER_E* value."""

    def __init__(self, code, message):
        self.code = code
        self.name = _lib.infer_strerror(code).decode()
        super().__init__("%s: %s" % (self.name, message) if message else self.name)


def _b(s):
    return None if s is None else s.encode()


def _take_str(p):
    """A malloc'd C string returned through char **: copy, then free."""
    try:
        return ctypes.string_at(p.value).decode()
    finally:
        _free(p)


class Generation:
    """One streaming generate: iterate for Pieces; .result at the end."""

    def __init__(self, client, params, keep):
        self._c = client
        self._keep = keep  # encoded strings and arrays params points into
        self._q = deque()
        self.done = False
        self.result = None
        self.error = None
        self._tok = _TOKEN_FN(self._on_token)
        self._done = _DONE_FN(self._on_done)
        rid = ctypes.c_uint32()
        rc = _lib.infer_generate_async(client._h, ctypes.byref(params),
                                       self._tok, self._done, None,
                                       ctypes.byref(rid))
        if rc < 0:
            raise client._error(rc)
        self.id = rid.value

    def _on_token(self, ud, token, text, n):
        self._q.append(Piece(token, ctypes.string_at(text, n).decode("utf-8", "replace")))
        return 0

    def _on_done(self, ud, status, res):
        self.done = True
        if status < 0:
            self.error = self._c._error(status)
        else:
            r = res.contents
            self.result = {
                "finish": r.finish.decode(), "prompt_tokens": r.prompt_tokens,
                "gen_tokens": r.gen_tokens, "ttft_ms": r.ttft_ms,
                "total_ms": r.total_ms, "tok_s": r.tok_s}

    def _step(self):
        h = self._c._h
        ev = select.POLLIN | (select.POLLOUT if _lib.infer_want_write(h) else 0)
        p = select.poll()
        p.register(_lib.infer_fd(h), ev)
        p.poll()
        rc = _lib.infer_process(h)
        if rc < 0:
            self.done = True
            self.error = self._c._error(rc)

    def __iter__(self):
        return self

    def __next__(self):
        while not self._q and not self.done:
            self._step()
        if self._q:
            return self._q.popleft()
        if self.error:
            err, self.error = self.error, None
            raise err
        raise StopIteration

    def cancel(self):
        """Stop the request and wait for its end (pieces are dropped)."""
        if self.done:
            return
        _lib.infer_cancel(self._c._h, self.id)
        while not self.done:
            self._step()
        self._q.clear()
        self.error = None

    def __del__(self):
        try:
            if not self.done and self._c._h:
                self.cancel()
        except Exception:
            pass


class Client:
    """One connection to inferd (socket None = the default path)."""

    def __init__(self, socket=None):
        self._h = None
        h = _P()
        err = ctypes.create_string_buffer(512)
        rc = _lib.infer_connect(ctypes.byref(h), _b(socket), err, len(err))
        if rc < 0:
            raise InferError(rc, err.value.decode())
        self._h = h

    def close(self):
        if self._h:
            _lib.infer_close(self._h)
            self._h = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()

    def _error(self, rc):
        m = _lib.infer_errmsg(self._h) if self._h else None
        return InferError(rc, m.decode() if m else "")

    def _check(self, rc):
        if rc < 0:
            raise self._error(rc)
        return rc

    def _json(self, fn):
        p = ctypes.c_void_p()
        self._check(fn(self._h, ctypes.byref(p)))
        return json.loads(_take_str(p))

    def ping(self):
        self._check(_lib.infer_ping(self._h))

    def status(self):
        return self._json(_lib.infer_status)

    def models(self):
        """The daemon's models: a list of dicts (name, path, state, ...)."""
        return self._json(_lib.infer_models)["models"]

    def metrics(self):
        """The daemon's metrics, Prometheus text exposition format."""
        p = ctypes.c_void_p()
        self._check(_lib.infer_metrics(self._h, ctypes.byref(p)))
        return _take_str(p)

    def load(self, model, keep_alive=KEEP_DEFAULT):
        self._check(_lib.infer_load(self._h, _b(model), keep_alive))

    def unload(self, model):
        self._check(_lib.infer_unload(self._h, _b(model)))

    def tokenize(self, model, text, add_bos=True, special=True):
        p = ctypes.c_void_p()
        n = self._check(_lib.infer_tokenize(self._h, _b(model), _b(text),
                                            int(add_bos), int(special),
                                            ctypes.byref(p)))
        try:
            return list(ctypes.cast(p, ctypes.POINTER(ctypes.c_int32))[:n])
        finally:
            _free(p)

    def detokenize(self, model, ids):
        arr = (ctypes.c_int32 * len(ids))(*ids)
        p = ctypes.c_void_p()
        self._check(_lib.infer_detokenize(self._h, _b(model), arr, len(ids),
                                          ctypes.byref(p)))
        return _take_str(p)

    def generate(self, model, prompt=None, messages=None, system=None,
                 chat_template=None, max_tokens=None, temperature=None,
                 top_k=None, top_p=None, min_p=None, repeat_penalty=None,
                 seed=None, stop=None, ignore_eos=False,
                 keep_alive=KEEP_DEFAULT):
        """Start a generate and return its streaming Generation.

        prompt is raw text; or messages, a list of (role, content) pairs
        or {"role":..., "content":...} dicts, for the chat template.
        Options left None take the daemon's defaults."""
        p = _GenParams()
        _lib.infer_gen_params_init(ctypes.byref(p))
        keep = []

        def s(v):
            b = _b(v)
            keep.append(b)
            return b
        p.model = s(model)
        p.prompt = s(prompt)
        if messages:
            msgs = (_Message * len(messages))()
            for i, m in enumerate(messages):
                role, content = (m["role"], m["content"]) if isinstance(m, dict) else m
                msgs[i].role = s(role)
                msgs[i].content = s(content)
            keep.append(msgs)
            p.messages = msgs
            p.n_messages = len(messages)
        p.system = s(system)
        p.chat_template = s(chat_template)
        for name, v in (("max_tokens", max_tokens), ("temperature", temperature),
                        ("top_k", top_k), ("top_p", top_p), ("min_p", min_p),
                        ("repeat_penalty", repeat_penalty), ("seed", seed)):
            if v is not None:
                setattr(p, name, v)
        if stop:
            arr = (ctypes.c_char_p * len(stop))(*[s(x) for x in stop])
            keep.append(arr)
            p.stop = arr
            p.n_stop = len(stop)
        p.ignore_eos = int(bool(ignore_eos))
        p.keep_alive = keep_alive
        return Generation(self, p, keep)

    def complete(self, model, prompt=None, **kw):
        """generate() collected: (text, result dict)."""
        g = self.generate(model, prompt, **kw)
        text = "".join(piece.text for piece in g)
        return text, g.result
