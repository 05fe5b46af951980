"""The wire contract: the generated stubs match the .proto, and its shape is pinned.

Field numbers are the wire format: renumbering or reusing one breaks every
deployed client, so they are listed here and a change must be deliberate.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from types import ModuleType

import grpc
import pytest
from google.protobuf import descriptor

from camserve.v1 import explain_pb2 as pb
from camserve.v1 import explain_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
GENERATOR = ROOT / "scripts" / "gen_protos.py"
SERVICE = pb.DESCRIPTOR.services_by_name["ExplainService"]

# rpc -> (request, response, client streams, server streams)
RPCS: dict[str, tuple[str, str, bool, bool]] = {
    "Explain": ("ExplainRequest", "ExplainResponse", False, False),
    "ExplainStream": ("ExplainRequest", "ExplainStreamResponse", True, True),
    "Embed": ("EmbedRequest", "EmbedResponse", False, False),
    "Activations": ("ActivationsRequest", "ActivationsResponse", False, False),
    "Filters": ("FiltersRequest", "FiltersResponse", False, False),
    "ListModels": ("ListModelsRequest", "ListModelsResponse", False, False),
    "ListMethods": ("ListMethodsRequest", "ListMethodsResponse", False, False),
}

FIELD_NUMBERS: dict[str, dict[str, int]] = {
    "Tensor": {"shape": 1, "dtype": 2, "data": 3},
    "ImageInput": {"encoded": 1, "tensor": 2},
    "NumberList": {"values": 1},
    "OptionValue": {"number": 1, "text": 2, "flag": 3, "numbers": 4},
    "Targets": {"classes": 1, "top_k": 2},
    "OutputOptions": {"height": 1, "width": 2, "dtype": 3, "return_raw": 4},
    "ExplainRequest": {
        "request_id": 1,
        "model": 2,
        "method": 3,
        "input": 4,
        "targets": 5,
        "layer": 6,
        "options": 7,
        "output": 8,
        "faithfulness": 9,
        "faithfulness_options": 10,
    },
    "FaithfulnessOptions": {"steps": 1, "percentile": 2},
    "Heatmap": {"target": 1, "label": 2, "map": 3, "empty": 4, "raw": 5},
    "ClassScore": {"index": 1, "label": 2, "probability": 3, "logit": 4},
    "Timings": {"decode_ms": 1, "queue_ms": 2, "compute_ms": 3, "total_ms": 4},
    "ExplainResponse": {
        "request_id": 1,
        "model": 2,
        "method": 3,
        "variant": 4,
        "layer": 5,
        "heatmaps": 6,
        "top_classes": 7,
        "cache_hit": 8,
        "timings": 9,
        "metrics": 10,
        "image_height": 11,
        "image_width": 12,
    },
    "Error": {"code": 1, "message": 2},
    "ExplainStreamResponse": {"request_id": 1, "response": 2, "error": 3},
    "EmbedRequest": {"model": 1, "input": 2, "layer": 3, "normalize": 4},
    "EmbedResponse": {"vector": 1, "layer": 2, "dim": 3},
    "ActivationsRequest": {"model": 1, "input": 2, "layer": 3, "top_k": 4, "mode": 5},
    "ActivationsResponse": {"maps": 1, "channels": 2, "profile": 3, "layer": 4},
    "FiltersRequest": {"model": 1, "layer": 2},
    "FiltersResponse": {"weights": 1, "layer": 2},
    "ListModelsRequest": {},
    "ModelInfo": {
        "name": 1,
        "layers": 2,
        "default_layer": 3,
        "input_height": 4,
        "input_width": 5,
        "num_classes": 6,
        "has_labels": 7,
        "labels": 8,
        "methods": 9,
        "format": 10,
        "weights_digest": 11,
        "weights_source": 12,
    },
    "ListModelsResponse": {"models": 1},
    "ListMethodsRequest": {},
    "OptionInfo": {"name": 1, "default": 2, "description": 3},
    "MethodInfo": {
        "id": 1,
        "family": 2,
        "uses_layer": 3,
        "uses_targets": 4,
        "description": 5,
        "reference": 6,
        "options": 7,
    },
    "ListMethodsResponse": {"methods": 1},
}

ENUMS: dict[str, dict[str, int]] = {
    "DType": {"DTYPE_UNSPECIFIED": 0, "DTYPE_FLOAT32": 1, "DTYPE_FLOAT16": 2, "DTYPE_UINT8": 3},
    "ActivationsMode": {
        "ACTIVATIONS_MODE_UNSPECIFIED": 0,
        "ACTIVATIONS_MODE_FEATURE_MAPS": 1,
        "ACTIVATIONS_MODE_CHANNEL_PROFILE": 2,
    },
}


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_protos", GENERATOR)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_stubs_match_the_proto() -> None:
    result = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_reports_changed_missing_and_unexpected_files(tmp_path: Path) -> None:
    gen = _load_generator()
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    outputs: list[Path] = gen.generate(fresh)
    stems = [proto.stem for proto in gen.proto_files()]
    assert {"explain", "jobs"} <= set(stems)
    assert sorted(p.name for p in outputs) == sorted(
        stem + suffix for stem in stems for suffix in gen.GENERATED_SUFFIXES
    )
    committed = tmp_path / "committed"
    shutil.copytree(fresh, committed)
    assert gen.stale_files(outputs, fresh, committed) == []

    v1 = committed / "camserve" / "v1"
    (v1 / "explain_pb2.py").write_bytes((v1 / "explain_pb2.py").read_bytes() + b"\n")
    (v1 / "explain_pb2_grpc.pyi").unlink()
    (v1 / "old_pb2.py").write_text("")
    problems = "\n".join(gen.stale_files(outputs, fresh, committed))
    assert "differs" in problems
    assert "explain_pb2.py" in problems
    assert "missing" in problems
    assert "explain_pb2_grpc.pyi" in problems
    assert "unexpected" in problems
    assert "old_pb2.py" in problems


@pytest.mark.parametrize("name", ["explain_pb2.py", "explain_pb2_grpc.py"])
def test_generated_files_say_do_not_edit(name: str) -> None:
    head = (ROOT / "client" / "camserve" / "v1" / name).read_text().splitlines()[:3]
    assert any("DO NOT EDIT" in line for line in head)


def test_package_and_service() -> None:
    assert pb.DESCRIPTOR.package == "camserve.v1"
    assert pb.DESCRIPTOR.name == "camserve/v1/explain.proto"
    assert SERVICE.full_name == "camserve.v1.ExplainService"


def test_service_has_the_listed_methods() -> None:
    assert sorted(m.name for m in SERVICE.methods) == sorted(RPCS)
    for name, (request, response, client_streams, server_streams) in RPCS.items():
        method = SERVICE.methods_by_name[name]
        assert method.input_type.name == request, name
        assert method.output_type.name == response, name
        assert method.client_streaming is client_streams, name
        assert method.server_streaming is server_streams, name
        assert callable(getattr(explain_pb2_grpc.ExplainServiceServicer, name))


def test_field_numbers_are_pinned() -> None:
    actual = {
        name: {f.name: f.number for f in message.fields}
        for name, message in pb.DESCRIPTOR.message_types_by_name.items()
    }
    assert actual == FIELD_NUMBERS


def test_enums_are_pinned() -> None:
    actual = {
        name: {v.name: v.number for v in enum.values}
        for name, enum in pb.DESCRIPTOR.enum_types_by_name.items()
    }
    assert actual == ENUMS


@pytest.mark.parametrize(
    ("message", "oneof", "fields"),
    [
        ("ImageInput", "source", ["encoded", "tensor"]),
        ("OptionValue", "kind", ["number", "text", "flag", "numbers"]),
        ("ExplainStreamResponse", "result", ["response", "error"]),
    ],
)
def test_oneofs(message: str, oneof: str, fields: list[str]) -> None:
    group = pb.DESCRIPTOR.message_types_by_name[message].oneofs_by_name[oneof]
    assert [f.name for f in group.fields] == fields


def _map_value(message: descriptor.Descriptor, field: str) -> descriptor.FieldDescriptor:
    entry = message.fields_by_name[field].message_type
    assert entry is not None
    assert entry.GetOptions().map_entry
    return entry.fields_by_name["value"]


def test_maps() -> None:
    options = _map_value(pb.ExplainRequest.DESCRIPTOR, "options")
    assert options.message_type is not None
    assert options.message_type.name == "OptionValue"
    metrics = _map_value(pb.ExplainResponse.DESCRIPTOR, "metrics")
    assert metrics.type == descriptor.FieldDescriptor.TYPE_DOUBLE


def test_a_full_request_survives_the_wire() -> None:
    request = pb.ExplainRequest(
        request_id="r-1",
        model="resnet50",
        method="gradcam",
        input=pb.ImageInput(encoded=b"\x89PNG"),
        targets=pb.Targets(classes=[3, 7]),
        layer="layer4",
        options={
            "steps": pb.OptionValue(number=32),
            "baseline": pb.OptionValue(text="black"),
            "smooth": pb.OptionValue(flag=True),
            "window": pb.OptionValue(numbers=pb.NumberList(values=[16, 16])),
        },
        output=pb.OutputOptions(height=224, width=224, dtype=pb.DTYPE_UINT8, return_raw=True),
    )
    parsed = pb.ExplainRequest.FromString(request.SerializeToString())
    assert parsed == request
    assert parsed.input.WhichOneof("source") == "encoded"
    assert parsed.options["window"].WhichOneof("kind") == "numbers"
    assert list(parsed.options["window"].numbers.values) == [16.0, 16.0]


def test_stream_reply_holds_a_response_or_an_error() -> None:
    reply = pb.ExplainStreamResponse(request_id="a", response=pb.ExplainResponse(request_id="a"))
    assert reply.WhichOneof("result") == "response"
    reply.error.CopyFrom(pb.Error(code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message="bad"))
    assert reply.WhichOneof("result") == "error"
    assert not reply.HasField("response")
    assert reply.error.code == 3


class _EchoServicer(explain_pb2_grpc.ExplainServiceServicer):
    """Answers ListModels and ExplainStream; a request without a model fails alone."""

    def ListModels(  # noqa: N802 (the RPC's name)
        self, request: pb.ListModelsRequest, context: grpc.ServicerContext
    ) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(models=[pb.ModelInfo(name="m", num_classes=10)])

    def ExplainStream(  # noqa: N802 (the RPC's name)
        self, requests: Iterator[pb.ExplainRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.ExplainStreamResponse]:
        for request in requests:
            if request.model:
                yield pb.ExplainStreamResponse(
                    request_id=request.request_id,
                    response=pb.ExplainResponse(request_id=request.request_id, model=request.model),
                )
            else:
                yield pb.ExplainStreamResponse(
                    request_id=request.request_id,
                    error=pb.Error(code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message="no"),
                )


def test_stubs_work_over_a_channel() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    # The type stubs mark every RPC abstract; at run time the base class answers
    # UNIMPLEMENTED for those a servicer leaves out, which this test relies on.
    servicer = _EchoServicer()  # type: ignore[abstract]
    explain_pb2_grpc.add_ExplainServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = explain_pb2_grpc.ExplainServiceStub(channel)
            models = stub.ListModels(pb.ListModelsRequest(), timeout=10)
            assert [m.name for m in models.models] == ["m"]
            requests = [
                pb.ExplainRequest(request_id="1", model="m"),
                pb.ExplainRequest(request_id="2"),
                pb.ExplainRequest(request_id="3", model="m"),
            ]
            replies = list(stub.ExplainStream(iter(requests), timeout=10))
            assert [r.request_id for r in replies] == ["1", "2", "3"]
            assert [r.WhichOneof("result") for r in replies] == ["response", "error", "response"]
            assert replies[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
            with pytest.raises(grpc.RpcError) as failure:
                stub.Filters(pb.FiltersRequest(model="m"), timeout=10)
            assert failure.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        server.stop(grace=None)
