"""The closed sets of statecli's options and results that are no part of the checkpoint model
(state.py): sort orders, rewrite targets, change kinds, check rules, load-report problems, layouts.
StrEnums: each value is the word shown in tables, JSON and CSV, and the value an option takes."""

from __future__ import annotations

from enum import StrEnum


class Layout(StrEnum):
    """torch's tensor layouts (TensorInfo.layout holds the name as read: a file may name others)."""

    STRIDED = "strided"
    SPARSE_COO = "sparse_coo"
    SPARSE_CSR = "sparse_csr"
    SPARSE_CSC = "sparse_csc"
    SPARSE_BSR = "sparse_bsr"
    SPARSE_BSC = "sparse_bsc"
    MKLDNN = "_mkldnn"
    JAGGED = "jagged"
    QUANTIZED = "quantized"  # statecli's name for a quantized tensor's values (torch keeps them strided)


class SortOrder(StrEnum):
    """`diff --sort`: the order of the per-module rows."""

    ORDER = "order"  # as in the model
    CHANGE = "change"
    COSINE = "cosine"
    MAX_ABS = "max-abs"
    OVER_TOL = "over-tol"
    NAME = "name"


class WriteFormat(StrEnum):
    """What a rewrite writes (`--to`)."""

    PT = "pt"
    SAFETENSORS = "safetensors"
    DCP = "dcp"


class CastTarget(StrEnum):
    """The floating dtypes `cast` writes (torch names; each has a kernel on every torch build)."""

    FLOAT16 = "float16"
    BFLOAT16 = "bfloat16"
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    FLOAT8_E4M3FN = "float8_e4m3fn"
    FLOAT8_E5M2 = "float8_e5m2"


class CastOnly(StrEnum):
    """`cast --only`: which tensors of the model state are cast."""

    PARAMS = "params"
    BUFFERS = "buffers"


class ChangeKind(StrEnum):
    """What a rewrite did to one entry (rewrite.plan.Change.what)."""

    REMOVED = "removed"
    RENAMED = "renamed"
    CAST = "cast"
    DEQUANTIZED = "dequantized"  # a quantized weight written as a dense tensor (convert --dequantize)
    MOVED = "moved"


class CheckRule(StrEnum):
    """The rule ids of `statecli check` (as in findings, JSON and CSV); READ and UNSAFE name the rows
    of a file that could not be checked."""

    SAFE_PICKLE = "safe-pickle"
    NO_NAN = "no-nan"
    NO_INF = "no-inf"
    DTYPES = "dtypes"
    MAX_SIZE = "max-size"
    DEVICES = "devices"
    REQUIRED_KEYS = "required-keys"
    FORBIDDEN_KEYS = "forbidden-keys"
    NO_OPTIMIZER_STATE = "no-optimizer-state"
    MATCHES_MODEL = "matches-model"
    FORMAT = "format"
    BITS_PER_WEIGHT = "bits-per-weight"  # bits per weight of the parameters (quantized checkpoints) at most N
    QUANTIZATION = "quantization"  # quantized with an allowed method, every weight but the ignore list
    STORAGE_DTYPES = "storage-dtypes"  # the dtypes as stored: a quantized weight's packed parts, scales, zeros
    READ = "read"
    UNSAFE = "unsafe"


class ReportProblem(StrEnum):
    """What a load-report line says is wrong with one key (modeldef.ReportLine.problem)."""

    MISSING = "missing"
    UNEXPECTED = "unexpected"
    SHAPE_MISMATCH = "shape mismatch"
    DTYPE_DIFFERS = "dtype differs"
    QUANTIZED = "quantized"  # a quantized weight for a float parameter: expected, the quantizer's loader reads it
    RENAMED = "renamed"
    CONVERTED = "converted"
    CONVERSION_FAILED = "conversion failed"
    UNTIED = "loads untied"  # tied in the model, held twice with different values in the file


class Format(StrEnum):
    """On-disk checkpoint formats, as named in output (the values are the strings JSON has always shown).
    Each is the `format` of one handler in formats/registry.py; a read or a scan reports the member
    its bytes turned out to be (a torch zip handler finds a TorchScript archive or an .npz)."""

    TORCH_ZIP = "torch zip"
    TORCHSCRIPT_ZIP = "torchscript zip"
    TORCH_LEGACY = "torch legacy"
    TORCH_TAR = "torch tar (pre-0.4)"
    PICKLE = "pickle"  # a bare pickle stream: scanned, never read as a checkpoint
    NUMPY_ARRAY = "numpy array"
    NUMPY_NPZ = "numpy npz"
    SAFETENSORS = "safetensors"
    SHARDED = "sharded"  # an index over shards, as `scan` names it before reading a shard
    SHARDED_SAFETENSORS = "sharded safetensors"
    SHARDED_TORCH = "sharded torch"
    DCP = "torch.distributed.checkpoint"
    HF_CONFIG = "hugging face config"  # a config.json whose auto_map names code (scan only)
    GGUF = "gguf"  # llama.cpp's format (one file or a split model's parts)
    PT2 = "torch.export pt2"  # torch.export.save / AOTInductor package archives (formats/pt2.py)
    ONNX = "onnx"  # an ONNX model's initializers, read-only (formats/onnx.py)

    @property
    def is_sharded(self) -> bool:
        """An index over shard files: the checkpoint is a folder."""
        return self in (Format.SHARDED, Format.SHARDED_SAFETENSORS, Format.SHARDED_TORCH)

    @property
    def family(self) -> WriteFormat:
        """The name a user gives this format (`check --format`, `--to`): safetensors, dcp or pt."""
        if self in (Format.SAFETENSORS, Format.SHARDED_SAFETENSORS):
            return WriteFormat.SAFETENSORS
        return WriteFormat.DCP if self is Format.DCP else WriteFormat.PT

    def files_phrase(self, files: int) -> str:
        """What a checkpoint of this format made of `files` files is made of, as its header says it ("" for
        one file): a split GGUF's parts, an index's shards, DCP's items beside its .metadata."""
        if files <= 1:
            return ""
        if self is Format.GGUF:  # every part is a .gguf; none is an index
            return f"{files} parts"
        data = f"{files - 1} data file{'s' if files > 2 else ''}"
        if self.is_sharded:
            return f"{data} + index"
        return f"{data} + .metadata" if self is Format.DCP else f"{files} files"


class BatchCommand(StrEnum):
    """The commands `statecli batch` runs over many checkpoints."""

    SCAN = "scan"
    INSPECT = "inspect"
    CHECK = "check"
    SIZE = "size"

    @property
    def reads_values(self) -> bool:
        """Whether the command may read tensor values (CPU work: processes) rather than metadata."""
        return self in (BatchCommand.INSPECT, BatchCommand.CHECK)
