"""Direct calls into the PKCS#11 module's function list (ctypes), for what python-pkcs11 lacks.

python-pkcs11 loads the module, finds the token, logs in and manages objects. Two things it
cannot do for a session pool serving operations that span several requests:

* ``C_Initialize`` with ``CKF_OS_LOCKING_OK``. python-pkcs11 passes ``NULL``, which tells the
  module that the application is single-threaded; SoftHSM2 then disables every internal
  mutex (``MutexFactory::disable()``) and races under parallel use. The worker finalises
  python-pkcs11's initialisation and initialises again through this module.
* Multi-part operations (``C_xxxInit`` / ``Update`` / ``Final``) on a session chosen per
  request, with the key given by handle. python-pkcs11 binds keys to the session that found
  them and runs multi-part operations inside one ``with`` block or generator.

Every call releases the GIL (ctypes ``CFUNCTYPE``), so sessions work in parallel.
"""

from __future__ import annotations

import ctypes
from ctypes import POINTER, Structure, byref, c_ubyte, c_ulong, c_void_p
from dataclasses import dataclass
from typing import Any

CK_ULONG = c_ulong
CK_RV = c_ulong
CKF_OS_LOCKING_OK = 0x2
CKR_OK = 0x0
CKR_BUFFER_TOO_SMALL = 0x150
CKR_CRYPTOKI_ALREADY_INITIALIZED = 0x191

CKR_NAMES: dict[int, str] = {
    0x0: "CKR_OK",
    0x1: "CKR_CANCEL",
    0x2: "CKR_HOST_MEMORY",
    0x3: "CKR_SLOT_ID_INVALID",
    0x5: "CKR_GENERAL_ERROR",
    0x6: "CKR_FUNCTION_FAILED",
    0x7: "CKR_ARGUMENTS_BAD",
    0x10: "CKR_ATTRIBUTE_READ_ONLY",
    0x11: "CKR_ATTRIBUTE_SENSITIVE",
    0x12: "CKR_ATTRIBUTE_TYPE_INVALID",
    0x13: "CKR_ATTRIBUTE_VALUE_INVALID",
    0x1B: "CKR_ACTION_PROHIBITED",
    0x20: "CKR_DATA_INVALID",
    0x21: "CKR_DATA_LEN_RANGE",
    0x30: "CKR_DEVICE_ERROR",
    0x31: "CKR_DEVICE_MEMORY",
    0x32: "CKR_DEVICE_REMOVED",
    0x40: "CKR_ENCRYPTED_DATA_INVALID",
    0x41: "CKR_ENCRYPTED_DATA_LEN_RANGE",
    0x50: "CKR_FUNCTION_CANCELED",
    0x54: "CKR_FUNCTION_NOT_SUPPORTED",
    0x60: "CKR_KEY_HANDLE_INVALID",
    0x62: "CKR_KEY_SIZE_RANGE",
    0x63: "CKR_KEY_TYPE_INCONSISTENT",
    0x68: "CKR_KEY_FUNCTION_NOT_PERMITTED",
    0x69: "CKR_KEY_NOT_WRAPPABLE",
    0x6A: "CKR_KEY_UNEXTRACTABLE",
    0x70: "CKR_MECHANISM_INVALID",
    0x71: "CKR_MECHANISM_PARAM_INVALID",
    0x82: "CKR_OBJECT_HANDLE_INVALID",
    0x90: "CKR_OPERATION_ACTIVE",
    0x91: "CKR_OPERATION_NOT_INITIALIZED",
    0xA0: "CKR_PIN_INCORRECT",
    0xA4: "CKR_PIN_LOCKED",
    0xB0: "CKR_SESSION_CLOSED",
    0xB1: "CKR_SESSION_COUNT",
    0xB3: "CKR_SESSION_HANDLE_INVALID",
    0xB5: "CKR_SESSION_READ_ONLY",
    0xC0: "CKR_SIGNATURE_INVALID",
    0xC1: "CKR_SIGNATURE_LEN_RANGE",
    0xD0: "CKR_TEMPLATE_INCOMPLETE",
    0xD1: "CKR_TEMPLATE_INCONSISTENT",
    0xE0: "CKR_TOKEN_NOT_PRESENT",
    0xE1: "CKR_TOKEN_NOT_RECOGNIZED",
    0xE2: "CKR_TOKEN_WRITE_PROTECTED",
    0x100: "CKR_USER_ALREADY_LOGGED_IN",
    0x101: "CKR_USER_NOT_LOGGED_IN",
    0x110: "CKR_WRAPPED_KEY_INVALID",
    0x112: "CKR_WRAPPED_KEY_LEN_RANGE",
    0x130: "CKR_DOMAIN_PARAMS_INVALID",
    0x150: "CKR_BUFFER_TOO_SMALL",
    0x190: "CKR_CRYPTOKI_NOT_INITIALIZED",
    0x191: "CKR_CRYPTOKI_ALREADY_INITIALIZED",
}

_FUNCTIONS = (
    "C_Initialize C_Finalize C_GetInfo C_GetFunctionList C_GetSlotList C_GetSlotInfo "
    "C_GetTokenInfo C_GetMechanismList C_GetMechanismInfo C_InitToken C_InitPIN C_SetPIN "
    "C_OpenSession C_CloseSession C_CloseAllSessions C_GetSessionInfo C_GetOperationState "
    "C_SetOperationState C_Login C_Logout C_CreateObject C_CopyObject C_DestroyObject "
    "C_GetObjectSize C_GetAttributeValue C_SetAttributeValue C_FindObjectsInit C_FindObjects "
    "C_FindObjectsFinal C_EncryptInit C_Encrypt C_EncryptUpdate C_EncryptFinal C_DecryptInit "
    "C_Decrypt C_DecryptUpdate C_DecryptFinal C_DigestInit C_Digest C_DigestUpdate C_DigestKey "
    "C_DigestFinal C_SignInit C_Sign C_SignUpdate C_SignFinal C_SignRecoverInit C_SignRecover "
    "C_VerifyInit C_Verify C_VerifyUpdate C_VerifyFinal C_VerifyRecoverInit C_VerifyRecover "
    "C_DigestEncryptUpdate C_DecryptDigestUpdate C_SignEncryptUpdate C_DecryptVerifyUpdate "
    "C_GenerateKey C_GenerateKeyPair C_WrapKey C_UnwrapKey C_DeriveKey C_SeedRandom "
    "C_GenerateRandom C_GetFunctionStatus C_CancelFunction C_WaitForSlotEvent"
).split()


class _Version(Structure):
    _fields_ = [("major", c_ubyte), ("minor", c_ubyte)]


class _FunctionList(Structure):
    # The v2.40 CK_FUNCTION_LIST: a version, then the function pointers in this fixed order.
    _fields_ = [("version", _Version)] + [(name, c_void_p) for name in _FUNCTIONS]


class _InitArgs(Structure):
    _fields_ = [
        ("CreateMutex", c_void_p),
        ("DestroyMutex", c_void_p),
        ("LockMutex", c_void_p),
        ("UnlockMutex", c_void_p),
        ("flags", CK_ULONG),
        ("pReserved", c_void_p),
    ]


class _Mechanism(Structure):
    _fields_ = [("mechanism", CK_ULONG), ("pParameter", c_void_p), ("ulParameterLen", CK_ULONG)]


class _GcmParams(Structure):
    # v2.40 layout (SoftHSM 2.6, most modules); v3.0 modules accept it for CKM_AES_GCM too.
    _fields_ = [
        ("pIv", c_void_p),
        ("ulIvLen", CK_ULONG),
        ("ulIvBits", CK_ULONG),
        ("pAAD", c_void_p),
        ("ulAADLen", CK_ULONG),
        ("ulTagBits", CK_ULONG),
    ]


class _CtrParams(Structure):
    _fields_ = [("ulCounterBits", CK_ULONG), ("cb", c_ubyte * 16)]


class _PssParams(Structure):
    _fields_ = [("hashAlg", CK_ULONG), ("mgf", CK_ULONG), ("sLen", CK_ULONG)]


class CKRError(Exception):
    """A PKCS#11 call returned something other than CKR_OK."""

    def __init__(self, rv: int, function: str) -> None:
        self.rv = rv
        self.name = CKR_NAMES.get(rv, f"CKR_0x{rv:X}")
        self.function = function
        super().__init__(f"{function} failed: {self.name} (0x{rv:X})")


@dataclass(frozen=True)
class MechanismSpec:
    """A mechanism and its parameter, in a picklable form sent from provider to worker.

    ``kind`` selects the parameter structure: ``none``, ``bytes`` (e.g. the CBC IV),
    ``gcm`` (iv, aad, tag_bits), ``ctr`` (counter_bits, counter block) or ``pss``
    (hash mechanism, MGF, salt length).
    """

    mechanism: int
    kind: str = "none"
    args: tuple[Any, ...] = ()


class _BuiltMechanism:
    """A CK_MECHANISM and the buffers it points into (kept alive for the whole operation)."""

    def __init__(self, spec: MechanismSpec) -> None:
        self.keep: list[Any] = []
        self.struct = _Mechanism(spec.mechanism, None, 0)
        param: Any = None
        if spec.kind == "bytes":
            data = ctypes.create_string_buffer(bytes(spec.args[0]), len(spec.args[0]))
            self.keep.append(data)
            self.struct.pParameter = ctypes.cast(data, c_void_p)
            self.struct.ulParameterLen = len(spec.args[0])
            return
        if spec.kind == "gcm":
            iv, aad, tag_bits = spec.args
            iv_buf = ctypes.create_string_buffer(bytes(iv), max(len(iv), 1))
            aad_buf = ctypes.create_string_buffer(bytes(aad), max(len(aad), 1))
            self.keep += [iv_buf, aad_buf]
            param = _GcmParams(
                ctypes.cast(iv_buf, c_void_p),
                len(iv),
                len(iv) * 8,
                ctypes.cast(aad_buf, c_void_p) if aad else None,
                len(aad),
                tag_bits,
            )
        elif spec.kind == "ctr":
            counter_bits, block = spec.args
            param = _CtrParams(counter_bits, (c_ubyte * 16)(*bytes(block)))
        elif spec.kind == "pss":
            param = _PssParams(*spec.args)
        elif spec.kind != "none":
            raise ValueError(f"unknown mechanism parameter kind {spec.kind!r}")
        if param is not None:
            self.keep.append(param)
            self.struct.pParameter = ctypes.cast(byref(param), c_void_p)
            self.struct.ulParameterLen = ctypes.sizeof(param)


_RV_FN = ctypes.CFUNCTYPE  # ctypes CFUNCTYPE releases the GIL around the call
_ULP = POINTER(CK_ULONG)


def _proto(*args: Any) -> Any:
    return _RV_FN(CK_RV, *args)


_SIGNATURES: dict[str, Any] = {
    "C_Initialize": _proto(c_void_p),
    "C_Finalize": _proto(c_void_p),
    # (session, mechanism, key)
    **{
        f"C_{op}Init": _proto(CK_ULONG, POINTER(_Mechanism), CK_ULONG)
        for op in ("Encrypt", "Decrypt", "Sign", "Verify")
    },
    "C_DigestInit": _proto(CK_ULONG, POINTER(_Mechanism)),
    # (session, in, in_len, out, out_len*)
    **{
        f"C_{op}": _proto(CK_ULONG, c_void_p, CK_ULONG, c_void_p, _ULP)
        for op in ("Encrypt", "Decrypt", "Digest", "Sign", "EncryptUpdate", "DecryptUpdate")
    },
    # (session, out, out_len*)
    **{f"C_{op}Final": _proto(CK_ULONG, c_void_p, _ULP) for op in ("Encrypt", "Decrypt", "Digest", "Sign")},
    # (session, in, in_len)
    **{f"C_{op}Update": _proto(CK_ULONG, c_void_p, CK_ULONG) for op in ("Digest", "Sign", "Verify")},
    "C_Verify": _proto(CK_ULONG, c_void_p, CK_ULONG, c_void_p, CK_ULONG),
    "C_VerifyFinal": _proto(CK_ULONG, c_void_p, CK_ULONG),
}


class Cryptoki:
    """The module's function list, with the calls the worker makes directly."""

    def __init__(self, module_path: str) -> None:
        # dlopen of an already loaded path returns the same handle: this is the module
        # instance python-pkcs11 loaded, with the same global state.
        self._dll = ctypes.CDLL(module_path)
        get_list = self._dll.C_GetFunctionList
        get_list.restype = CK_RV
        get_list.argtypes = [POINTER(POINTER(_FunctionList))]
        table = POINTER(_FunctionList)()
        rv = get_list(byref(table))
        if rv != CKR_OK:
            raise CKRError(rv, "C_GetFunctionList")
        self._table = table.contents
        self._fns: dict[str, Any] = {}
        for name, proto in _SIGNATURES.items():
            address = getattr(self._table, name)
            if not address:
                continue  # the module does not implement it; calling it raises below
            self._fns[name] = proto(address)

    @property
    def version(self) -> tuple[int, int]:
        """Cryptoki version of the function list."""
        return self._table.version.major, self._table.version.minor

    def _call(self, name: str, *args: Any) -> int:
        fn = self._fns.get(name)
        if fn is None:
            raise CKRError(0x54, name)  # CKR_FUNCTION_NOT_SUPPORTED
        return int(fn(*args))

    def _check(self, name: str, *args: Any) -> None:
        rv = self._call(name, *args)
        if rv != CKR_OK:
            raise CKRError(rv, name)

    # --- library ---------------------------------------------------------------------
    def initialize_threaded(self) -> None:
        """``C_Initialize`` telling the module to use OS locking (several threads call it)."""
        args = _InitArgs(None, None, None, None, CKF_OS_LOCKING_OK, None)
        self._check("C_Initialize", ctypes.cast(byref(args), c_void_p))

    def finalize(self) -> None:
        """``C_Finalize``."""
        self._check("C_Finalize", None)

    # --- helpers ---------------------------------------------------------------------
    def _with_output(self, name: str, head: tuple[Any, ...], size: int) -> bytes:
        """Call ``name(*head, out, &len)``, growing the buffer once on CKR_BUFFER_TOO_SMALL
        (the operation stays active in that case, as PKCS#11 specifies)."""
        size = max(size, 1)
        for _ in range(2):
            out = ctypes.create_string_buffer(size)
            length = CK_ULONG(size)
            rv = self._call(name, *head, out, byref(length))
            if rv == CKR_OK:
                return out.raw[: length.value]
            if rv != CKR_BUFFER_TOO_SMALL or length.value <= size:
                raise CKRError(rv, name)
            size = length.value
        raise CKRError(CKR_BUFFER_TOO_SMALL, name)

    # --- one operation on one session ------------------------------------------------
    def init(self, kind: str, session: int, spec: MechanismSpec, key: int) -> _BuiltMechanism:
        """``C_EncryptInit``/``DecryptInit``/``SignInit``/``VerifyInit``/``DigestInit``."""
        mech = _BuiltMechanism(spec)
        if kind == "Digest":
            self._check("C_DigestInit", session, byref(mech.struct))
        else:
            self._check(f"C_{kind}Init", session, byref(mech.struct), key)
        return mech

    def single(self, kind: str, session: int, data: bytes, out_size: int) -> bytes:
        """``C_Encrypt``/``C_Decrypt``/``C_Digest``/``C_Sign`` (ends the operation)."""
        return self._with_output(f"C_{kind}", (session, data, len(data)), out_size)

    def update(self, kind: str, session: int, data: bytes, out_size: int = 0) -> bytes:
        """``C_xxxUpdate``; returns output for Encrypt/Decrypt, ``b""`` otherwise."""
        if kind in ("Encrypt", "Decrypt"):
            return self._with_output(f"C_{kind}Update", (session, data, len(data)), out_size)
        self._check(f"C_{kind}Update", session, data, len(data))
        return b""

    def final(self, kind: str, session: int, out_size: int) -> bytes:
        """``C_EncryptFinal``/``DecryptFinal``/``DigestFinal``/``SignFinal``."""
        return self._with_output(f"C_{kind}Final", (session,), out_size)

    def verify(self, session: int, data: bytes, signature: bytes) -> int:
        """``C_Verify``; returns the CKR code (CKR_OK or CKR_SIGNATURE_*), raises otherwise."""
        return self._verify_rv("C_Verify", session, data, len(data), signature, len(signature))

    def verify_final(self, session: int, signature: bytes) -> int:
        """``C_VerifyFinal``; returns the CKR code like :meth:`verify`."""
        return self._verify_rv("C_VerifyFinal", session, signature, len(signature))

    def _verify_rv(self, name: str, *args: Any) -> int:
        rv = self._call(name, *args)
        if rv in (CKR_OK, 0xC0, 0xC1):  # OK, SIGNATURE_INVALID, SIGNATURE_LEN_RANGE
            return rv
        raise CKRError(rv, name)
