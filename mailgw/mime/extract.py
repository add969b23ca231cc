"""Text from attachments: PDF, DOCX, XLSX, ODT/ODS, plain text, HTML, RTF.

Entry point: :func:`extract_text` (thread-safe; the gateway calls it from a worker thread,
never on the event loop). It never raises: a file that is too big, broken, encrypted or
too slow gives ``("", reason)``.

Limits. A payload over ``max_bytes`` is skipped. Zip-based formats are checked for their
declared uncompressed size first (zip bombs). PDF reading stops after ``max_pages``; text is cut
at ``max_chars``. The parsers (pypdf, python-docx, openpyxl, expat) are pure Python/C code that
cannot be interrupted from another thread, so for the *hard* time limit the heavy formats run
in a child process from a ``forkserver`` context (children fork from a small, single-threaded
server that preloaded the libraries: safe to use from a threaded program, cheap per call) and
are killed when ``timeout`` expires; the child also gets an address-space limit. Cheap formats
(text, HTML, RTF) run in-process. ``ExtractLimits(isolate=False)`` runs everything in-process
(no hard timeout), for tests and tools.
"""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass
from xml.etree import ElementTree

from .charset import decode_bytes
from .html import html_to_text
from .text import decode_tcvn3, looks_like_tcvn3, nfc

__all__ = ["DEFAULT_LIMITS", "ExtractLimits", "extract_text", "sniff_kind"]


@dataclass(frozen=True)
class ExtractLimits:
    max_bytes: int = 25 * 1024 * 1024  # payload larger than this is not read
    max_chars: int = 1_000_000  # extracted text is cut here
    max_pages: int = 300  # PDF pages read
    max_unzipped: int = 200 * 1024 * 1024  # declared uncompressed size of a zip container
    max_cells: int = 200_000  # spreadsheet cells read
    timeout: float = 20.0  # seconds, hard limit when isolate=True
    isolate: bool = True  # heavy formats in a killable child process
    memory_bytes: int = 1024 * 1024 * 1024  # address-space limit of the child


DEFAULT_LIMITS = ExtractLimits()

HEAVY_KINDS = frozenset({"pdf", "docx", "xlsx", "odt", "ods"})

_EXT = {
    "pdf": "pdf",
    "docx": "docx",
    "docm": "docx",
    "xlsx": "xlsx",
    "xlsm": "xlsx",
    "odt": "odt",
    "ods": "ods",
    "odp": "odt",
    "txt": "text",
    "csv": "text",
    "log": "text",
    "htm": "html",
    "html": "html",
    "rtf": "rtf",
}
_CT = {
    "application/pdf": "pdf",
    "application/x-pdf": "pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "application/vnd.oasis.opendocument.text": "odt",
    "application/vnd.oasis.opendocument.spreadsheet": "ods",
    "application/vnd.oasis.opendocument.presentation": "odt",
    "text/plain": "text",
    "text/csv": "text",
    "text/html": "html",
    "application/rtf": "rtf",
    "text/rtf": "rtf",
}


def sniff_kind(payload: bytes, content_type: str, filename: str | None) -> str | None:
    """Which extractor applies: magic bytes first, then the file extension, then the type."""
    head = payload[:8]
    ext = (filename or "").rsplit(".", 1)[-1].lower() if filename and "." in filename else ""
    if head.startswith(b"%PDF"):
        return "pdf"
    if head.startswith(b"{\\rtf"):
        return "rtf"
    if head.startswith(b"PK\x03\x04"):
        kind = _EXT.get(ext) or _CT.get(content_type)
        if kind in ("docx", "xlsx", "odt", "ods"):
            return kind
        return _zip_kind(payload)
    kind = _EXT.get(ext) or _CT.get(content_type)
    if kind in HEAVY_KINDS:
        return kind  # claims a format its magic does not match: the parser will say so
    if kind is None and content_type.startswith("text/"):
        return "text"
    return kind


def _zip_kind(payload: bytes) -> str | None:
    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as zf:
            names = set(zf.namelist())
            if "word/document.xml" in names:
                return "docx"
            if "xl/workbook.xml" in names:
                return "xlsx"
            if "mimetype" in names:
                mt = zf.read("mimetype")[:100]
                if b"spreadsheet" in mt:
                    return "ods"
                if b"opendocument" in mt:
                    return "odt"
    except Exception:
        return None
    return None


class ExtractError(Exception):
    """A file we cannot read: the message is the reason shown to people."""


def _check_zip(payload: bytes, limits: ExtractLimits) -> None:
    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as zf:
            total = 0
            for info in zf.infolist():
                if info.flag_bits & 0x1:
                    raise ExtractError("encrypted")
                total += info.file_size
                if total > limits.max_unzipped:
                    raise ExtractError("too large when unpacked (zip bomb?)")
    except zipfile.BadZipFile as exc:
        raise ExtractError(f"broken file: {exc}") from None


def _pdf(payload: bytes, limits: ExtractLimits) -> str:
    import pypdf
    from pypdf.errors import PyPdfError

    try:
        reader = pypdf.PdfReader(io.BytesIO(payload), strict=False)
        if reader.is_encrypted:
            try:
                ok = reader.decrypt("")
            except Exception:
                ok = 0
            if not ok:
                raise ExtractError("encrypted")
        parts: list[str] = []
        size = 0
        for i, page in enumerate(reader.pages):
            if i >= limits.max_pages:
                break
            t = page.extract_text() or ""
            parts.append(t)
            size += len(t)
            if size >= limits.max_chars:
                break
        return "\n".join(parts)
    except ExtractError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise ExtractError(f"broken PDF: {exc.__class__.__name__}") from None
    except Exception as exc:
        raise ExtractError(f"broken PDF: {exc.__class__.__name__}") from None


def _docx(payload: bytes, limits: ExtractLimits) -> str:
    _check_zip(payload, limits)
    import docx

    try:
        document = docx.Document(io.BytesIO(payload))
    except Exception as exc:
        raise ExtractError(f"broken DOCX: {exc.__class__.__name__}") from None
    parts: list[str] = []
    size = 0
    # Paragraphs and tables in document order: the Decree-30 header block (issuer | motto,
    # "Số: ..." | place and date) is usually a table at the top, and must stay at the top.
    try:
        blocks = list(document.iter_inner_content())
    except Exception:
        blocks = [*document.paragraphs, *document.tables]
    for block in blocks:
        if hasattr(block, "rows"):
            for row in block.rows:
                cells = [c.text for c in row.cells]
                parts.append("\t".join(cells))
                size += sum(map(len, cells))
                if size > limits.max_chars:
                    return "\n".join(parts)
        else:
            parts.append(block.text)
            size += len(block.text)
            if size > limits.max_chars:
                return "\n".join(parts)
    return "\n".join(parts)


def _xlsx(payload: bytes, limits: ExtractLimits) -> str:
    _check_zip(payload, limits)
    import openpyxl

    try:
        wb = openpyxl.load_workbook(io.BytesIO(payload), read_only=True, data_only=True)
    except Exception as exc:
        raise ExtractError(f"broken XLSX: {exc.__class__.__name__}") from None
    parts: list[str] = []
    cells = 0
    try:
        for ws in wb.worksheets:
            parts.append(str(ws.title))
            for row in ws.iter_rows(values_only=True):
                vals = [str(v) for v in row if v is not None]
                cells += len(row)
                if vals:
                    parts.append("\t".join(vals))
                if cells > limits.max_cells:
                    return "\n".join(parts)
    finally:
        wb.close()
    return "\n".join(parts)


_ODF_BREAKS = {"p", "h", "table-row", "list-item", "line-break"}


def _odf(payload: bytes, limits: ExtractLimits) -> str:
    _check_zip(payload, limits)
    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as zf:
            data = zf.read("content.xml")
    except KeyError:
        raise ExtractError("broken ODF: no content.xml") from None
    except Exception as exc:
        raise ExtractError(f"broken ODF: {exc.__class__.__name__}") from None
    if b"<!ENTITY" in data[:10000]:
        raise ExtractError("broken ODF: DTD entities not allowed")
    parts: list[str] = []
    try:
        for event, elem in ElementTree.iterparse(io.BytesIO(data), events=("start", "end")):
            local = elem.tag.rsplit("}", 1)[-1]
            if event == "start":
                if elem.text:
                    parts.append(elem.text)
                if local == "tab":
                    parts.append("\t")
                elif local == "s":
                    parts.append(" ")
            else:
                if local in _ODF_BREAKS or local == "table-cell":
                    parts.append("\n" if local != "table-cell" else "\t")
                if elem.tail:
                    parts.append(elem.tail)
    except ElementTree.ParseError as exc:
        raise ExtractError(f"broken ODF: {exc}") from None
    return "".join(parts)


_RTF_TOKEN = re.compile(
    r"\\([a-zA-Z]+)(-?\d+)? ?|\\'([0-9a-fA-F]{2})|\\(.)|([{}])|([^\\{}]+)", re.S
)
_RTF_SKIP_DESTS = {
    "fonttbl", "colortbl", "stylesheet", "info", "pict", "object", "header", "footer",
    "generator", "xmlnstbl", "themedata", "datastore", "latentstyles", "listtable",
    "listoverridetable", "rsidtbl", "fldinst", "colorschememapping", "mmathPr",
}  # fmt: skip


def rtf_to_text(raw: bytes) -> str:
    """Crude RTF reader: text runs, \\'xx bytes in the document code page, \\uN characters."""
    text = raw.decode("latin-1")
    m = re.search(r"\\ansicpg(\d+)", text[:2000])
    codepage = f"cp{m.group(1)}" if m else "cp1252"
    out: list[str] = []
    pending = bytearray()
    stack: list[tuple[bool, int]] = []
    skip = False
    uc = 1
    skip_chars = 0

    def flush() -> None:
        if pending:
            try:
                out.append(bytes(pending).decode(codepage, errors="replace"))
            except LookupError:
                out.append(bytes(pending).decode("cp1252", errors="replace"))
            pending.clear()

    for tok in _RTF_TOKEN.finditer(text):
        word, arg, hexbyte, sym, brace, plain = tok.groups()
        if brace == "{":
            stack.append((skip, uc))
            continue
        if brace == "}":
            flush()
            if stack:
                skip, uc = stack.pop()
            continue
        if skip_chars and (hexbyte or plain):
            if plain:
                drop = min(skip_chars, len(plain))
                plain = plain[drop:]
                skip_chars -= drop
            else:
                skip_chars -= 1
                continue
        if skip:
            continue
        if word:
            if word in _RTF_SKIP_DESTS:
                skip = True
            elif word in ("par", "line", "row", "sect", "page"):
                flush()
                out.append("\n")
            elif word in ("tab", "cell"):
                flush()
                out.append("\t")
            elif word == "uc" and arg:
                uc = int(arg)
            elif word == "u" and arg:
                flush()
                code = int(arg)
                out.append(chr(code + 65536 if code < 0 else code))
                skip_chars = uc
        elif hexbyte:
            pending.append(int(hexbyte, 16))
        elif sym:
            if sym == "*":
                skip = True
            elif sym in "\\{}":
                flush()
                out.append(sym)
            elif sym == "~":
                out.append(" ")
        elif plain:
            flush()
            out.append(plain.replace("\r", "").replace("\n", ""))
    flush()
    return "".join(out)


def _extract_kind(payload: bytes, kind: str, charset: str | None, limits: ExtractLimits) -> str:
    if kind == "pdf":
        return _pdf(payload, limits)
    if kind == "docx":
        return _docx(payload, limits)
    if kind == "xlsx":
        return _xlsx(payload, limits)
    if kind in ("odt", "ods"):
        return _odf(payload, limits)
    if kind == "text":
        return decode_bytes(payload, charset)
    if kind == "html":
        return html_to_text(decode_bytes(payload, charset))
    if kind == "rtf":
        return rtf_to_text(payload)
    raise ExtractError("no text extractor for this type")


def _finish(text: str, limits: ExtractLimits) -> str:
    text = nfc(text[: limits.max_chars])
    if looks_like_tcvn3(text):  # PDFs made with .VnTime fonts
        text = decode_tcvn3(text)
    return text.strip()


def _run_guarded(
    payload: bytes, kind: str, charset: str | None, limits: ExtractLimits
) -> tuple[str, str | None]:
    try:
        return _finish(_extract_kind(payload, kind, charset, limits), limits), None
    except ExtractError as exc:
        return "", str(exc)
    except MemoryError:
        return "", "out of memory"
    except RecursionError:
        return "", "broken file: nesting too deep"
    except Exception as exc:
        return "", f"broken file: {exc.__class__.__name__}"


def _child(conn, payload: bytes, kind: str, charset: str | None, limits: ExtractLimits) -> None:
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    except Exception:
        pass
    try:
        conn.send(_run_guarded(payload, kind, charset, limits))
    finally:
        conn.close()


_CTX = None


def _context():
    global _CTX
    if _CTX is None:
        import multiprocessing

        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["mailgw.mime.extract", "pypdf", "docx", "openpyxl"])
        _CTX = ctx
    return _CTX


def _run_isolated(
    payload: bytes, kind: str, charset: str | None, limits: ExtractLimits
) -> tuple[str, str | None]:
    ctx = _context()
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(send, payload, kind, charset, limits), daemon=True)
    try:
        proc.start()
        send.close()
        if recv.poll(limits.timeout):
            try:
                return recv.recv()
            except EOFError:
                return "", "extraction crashed"
        return "", f"extraction took longer than {limits.timeout:g}s: abandoned"
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join(5)
        recv.close()
        try:
            proc.close()
        except ValueError:
            pass


def extract_text(
    payload: bytes,
    content_type: str = "application/octet-stream",
    filename: str | None = None,
    *,
    charset: str | None = None,
    limits: ExtractLimits = DEFAULT_LIMITS,
) -> tuple[str, str | None]:
    """Text of an attachment and, if there is none, why: ``(text, extract_error)``.

    ``(text, None)`` on success (text may be empty, e.g. a scanned PDF); ``("", None)`` for
    types we do not read (images, archives); ``("", reason)`` when the file is too large,
    broken, encrypted or too slow. Never raises.
    """
    try:
        kind = sniff_kind(payload, content_type.lower(), filename)
    except Exception:
        kind = None
    if kind is None:
        return "", None
    if len(payload) > limits.max_bytes:
        return "", f"too large for text extraction: {len(payload)} bytes > {limits.max_bytes}"
    if kind in HEAVY_KINDS and limits.isolate:
        try:
            return _run_isolated(payload, kind, charset, limits)
        except (OSError, ImportError, ValueError):
            pass  # no process support here: in-process, soft limits only
    return _run_guarded(payload, kind, charset, limits)
