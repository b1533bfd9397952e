"""Device and precision set-up of a trial: the ``precision`` key is validated, applied at trial
start and logged with the environment; a trial that holds a GPU on a machine whose CUDA is
broken fails with one line, while fake GPUs (no NVIDIA driver: the tests' ``ray.init(num_gpus=…)``)
still run on the CPU. CUDA's own failures are simulated by replacing ``torch.cuda`` functions."""

from __future__ import annotations

import pytest
import ray
import torch
from mlflow.tracking import MlflowClient

from tests.trainables.ray.test_checkpoint_devices import _fake_tune, context, toy_raw  # noqa: F401
from trainables import devices
from trainables.ray import trainable as ray_trainable
from trainables.config import ConfigError, validate_trial
from trainables.devices import CudaUnusableError, apply_precision, resolve_device
from trainables.tracking.environment import cpu_model, environment_params
from trainables.names import ENVIRONMENT_PARAM_TYPES

DRIVER_TOO_OLD = ("The NVIDIA driver on your system is too old (found version 11040).\n"
                  "Please update your GPU driver by downloading and installing a new version.")


@pytest.fixture
def flags():
    """torch's process-wide float32 flags, restored after the test (``cuda.matmul.allow_tf32``
    is ``float32_matmul_precision`` != highest, so restoring the precision restores it)."""
    cudnn = torch.backends.cudnn
    before = (cudnn.allow_tf32, cudnn.benchmark, torch.get_float32_matmul_precision())
    yield
    cudnn.allow_tf32, cudnn.benchmark = before[:2]
    torch.set_float32_matmul_precision(before[2])


def _flags():
    return (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
            torch.get_float32_matmul_precision(), torch.backends.cudnn.benchmark)


# ----------------------------------------------------------------------------------- precision


def test_precision_key_defaults_to_fp32_and_refuses_other_values():
    assert validate_trial(toy_raw())["precision"] == "fp32"
    assert validate_trial(toy_raw(precision="tf32"))["precision"] == "tf32"
    with pytest.raises(ConfigError) as err:
        validate_trial(toy_raw(precision="bf16"))
    assert err.value.key == "precision" and "\n" not in str(err.value)
    assert "unknown precision 'bf16'" in str(err.value) and "fp32" in str(err.value)


def test_precision_sets_the_float32_flags(flags):
    torch.backends.cudnn.benchmark = False
    apply_precision("tf32", torch.device("cuda"))  # only sets flags: no GPU needed
    assert _flags() == (True, True, "high", True)
    apply_precision("fp32", torch.device("cuda"))
    assert _flags() == (False, False, "highest", True)
    torch.backends.cudnn.benchmark = False
    apply_precision("tf32", "cpu")  # CPU matmuls stay full float32, the autotuner untouched
    assert _flags() == (False, True, "highest", False)
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        apply_precision("fp16", "cpu")


@pytest.mark.parametrize("precision", ["fp32", "tf32"])
def test_trial_applies_precision_and_logs_it_with_the_environment(
        precision, flags, tmp_path, monkeypatch, context):  # noqa: F811
    _fake_tune(monkeypatch, tmp_path, precision)
    torch.backends.cudnn.allow_tf32 = precision == "fp32"  # the opposite of what is asked
    torch.set_float32_matmul_precision("high")
    ray_trainable.run_trial({"trial": toy_raw(iterations=4, precision=precision)}, context)
    tf32 = str(precision == "tf32")
    assert torch.backends.cudnn.allow_tf32 == (precision == "tf32")
    assert torch.get_float32_matmul_precision() == "highest"  # a CPU trial, either way
    (run,) = MlflowClient(context.tracking_uri).search_runs(
        [context.experiment_id], f"tags.mlflow.parentRunId = '{context.parent_run_id}'")
    params = run.data.params
    assert params["precision"] == precision
    assert set(ENVIRONMENT_PARAM_TYPES) <= set(params)
    assert params["env_tf32_cudnn"] == tf32 and params["env_tf32_matmul"] == "False"
    assert params["env_float32_matmul_precision"] == "highest"
    assert params["env_torch"] == torch.__version__
    assert params["env_device_type"] == "cpu" and params["env_device_name"] == cpu_model()


def test_environment_params_are_flat_strings():
    env = environment_params("cpu")
    assert set(env) == set(ENVIRONMENT_PARAM_TYPES)
    assert all(isinstance(v, str) and v for v in env.values())
    assert env["env_cuda"] == (torch.version.cuda or "none")


def test_a_resumed_run_on_another_device_tags_the_params_that_changed(context):  # noqa: F811
    from trainables.tracking.mlflow_logger import MlflowTrialLogger
    from trainables.names import RESUMED_PARAMS_TAG

    first = MlflowTrialLogger(context.tracking_uri, context.experiment_id, name="r",
                              params={"device": "cuda", "env_device_name": "NVIDIA H100"},
                              parent_run_id=context.parent_run_id)
    first.finish("FAILED")
    again = MlflowTrialLogger(context.tracking_uri, context.experiment_id, name="r", params={},
                              run_id=first.run_id)
    again.log_params({"device": "cpu", "env_device_name": "cpu", "precision": "fp32"})
    run = MlflowClient(context.tracking_uri).get_run(first.run_id)
    assert run.data.params == {"device": "cuda", "env_device_name": "NVIDIA H100",
                               "precision": "fp32"}  # the first attempt's values stay
    assert run.data.tags[RESUMED_PARAMS_TAG] == "device=cpu; env_device_name=cpu"


# ----------------------------------------------------------------------- CUDA present, broken


@pytest.fixture
def broken_cuda(monkeypatch):
    """A GPU node whose driver is too old for this torch: the driver's files exist, CUDA does
    not initialise."""
    def init():
        raise RuntimeError(DRIVER_TOO_OLD)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "init", init)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(devices, "nvidia_driver_present", lambda: True)


@pytest.fixture
def ray_gave_a_gpu(monkeypatch):
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: ["0"])


def _one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


def test_a_trial_holding_a_gpu_with_broken_cuda_fails_with_one_line(broken_cuda, ray_gave_a_gpu):
    with pytest.raises(CudaUnusableError) as err:
        ray_trainable.trial_device("auto")
    text = _one_line(err)
    assert "Ray gave this trial GPU ['0']" in text and "driver on your system is too old" in text
    with pytest.raises(CudaUnusableError) as err:
        resolve_device("cuda:1")
    assert "device 'cuda:1' asks for a GPU" in _one_line(err)


def test_a_cpu_only_torch_on_a_gpu_node_fails_with_one_line(broken_cuda, ray_gave_a_gpu,
                                                           monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(CudaUnusableError) as err:
        ray_trainable.trial_device("auto")
    assert "CPU-only build" in _one_line(err)


def test_the_trainable_refuses_before_opening_a_run(broken_cuda, ray_gave_a_gpu, tmp_path,
                                                    monkeypatch, context):  # noqa: F811
    _fake_tune(monkeypatch, tmp_path, "broken")
    with pytest.raises(CudaUnusableError):
        ray_trainable.run_trial({"trial": toy_raw(device="auto")}, context)
    runs = MlflowClient(context.tracking_uri).search_runs(
        [context.experiment_id], f"tags.mlflow.parentRunId = '{context.parent_run_id}'")
    assert runs == []  # no run trained on the CPU instead


def test_fake_gpus_without_a_driver_still_run_on_the_cpu(ray_gave_a_gpu, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "nvidia_driver_present", lambda: False)
    assert ray_trainable.trial_device("auto") == torch.device("cpu")
    assert resolve_device("cuda") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [])  # no GPU held: CPU, even if broken
    monkeypatch.setattr(devices, "nvidia_driver_present", lambda: True)
    assert ray_trainable.trial_device("auto") == torch.device("cpu")
