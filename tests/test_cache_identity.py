"""A cache that cannot lie: model files, engine versions and defaults are in the key; pickles are refused."""

from __future__ import annotations

import inspect
import pickle
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from raypipe.engine.cache import CacheConfig, StageCache, stage_key
from raypipe.engine.datasets import write_table
from raypipe.engine.execution import content_digest
from raypipe.engine.models import file_sha256
from raypipe.engine.plan import choice_identity
from raypipe.evaluate.driver import evaluate
from raypipe.spec.registry import STAGE_BUILTINS, import_target, resolve, resolve_task
from raypipe.tasks.idcard.stages import ocr_tesseract
from raypipe.tasks.idcard.stages.ocr_easyocr import PACKAGED_WEIGHTS_SHA256, EasyOCR
from raypipe.tasks.idcard.stages.ocr_rapid import RapidOCR
from raypipe.tasks.idcard.stages.ocr_tesseract import TesseractOCR
from raypipe.tasks.idcard.stages.orient import TesseractOSD
from raypipe.tasks.idcard.stages.orient_cnn import OrientCNN
from tests.conftest import REPO, request_for

IDCARD = resolve_task("idcard")  # its image and OCR stage kinds resolve with the task

ORIENT_ONNX = REPO / "models" / "orient-cnn-int8.onnx"


def tessdata_folder() -> Path:
    listed = subprocess.run(["tesseract", "--list-langs"], capture_output=True, text=True, check=True)
    return Path(re.search(r'"([^"]+)"', listed.stdout + listed.stderr).group(1))


def test_tesseract_identity_names_binary_and_each_language_file():
    import pytesseract

    identity = TesseractOCR.cache_identity(lang="chi_sim+eng")
    assert identity["tesseract"] == f"tesseract {pytesseract.get_tesseract_version()}"
    folder = tessdata_folder()
    assert identity["traineddata"] == {
        "chi_sim": file_sha256(folder / "chi_sim.traineddata"),
        "eng": file_sha256(folder / "eng.traineddata"),
    }
    assert TesseractOCR.cache_identity()["traineddata"].keys() == {"chi_sim", "eng"}  # the default lang
    osd = TesseractOSD.cache_identity()
    assert osd["traineddata"] == {"osd": file_sha256(folder / "osd.traineddata")}
    assert osd["engines"]["pytesseract"] == f"pytesseract=={pytesseract.__version__}"


def test_changed_language_data_changes_the_key_and_the_binary_is_asked_once(tmp_path, monkeypatch):
    shutil.copy(tessdata_folder() / "eng.traineddata", tmp_path / "eng.traineddata")
    monkeypatch.setenv("TESSDATA_PREFIX", str(tmp_path))
    before = ocr_tesseract._tesseract_install.cache_info().misses
    same = choice_identity(TesseractOCR, {"lang": "eng"})
    assert TesseractOCR.cache_identity(lang="eng")["traineddata"]["eng"] == file_sha256(
        tessdata_folder() / "eng.traineddata"
    )
    with (tmp_path / "eng.traineddata").open("ab") as stream:
        stream.write(b"\0")  # an updated language pack
    changed = choice_identity(TesseractOCR, {"lang": "eng"})
    assert changed != same
    assert ocr_tesseract._tesseract_install.cache_info().misses == before + 1  # one probe per setting


def test_rapidocr_identity_hashes_its_bundled_models():
    import onnxruntime
    import rapidocr_onnxruntime

    folder = Path(rapidocr_onnxruntime.__file__).parent
    identity = RapidOCR.cache_identity()
    onnx_files = {n for n in identity["models"] if n.endswith(".onnx")}
    assert len(onnx_files) == 3  # detector, direction classifier, recognizer
    for name, digest in identity["models"].items():
        assert digest == file_sha256(folder / name)
    assert identity["engines"]["onnxruntime"].endswith(f"=={onnxruntime.__version__}")


def test_easyocr_identity_hashes_weights_and_the_onnx_recognizer(tmp_path):
    identity = EasyOCR.cache_identity()
    assert identity["weights"] == PACKAGED_WEIGHTS_SHA256
    assert identity["recognizer"] == {} and "onnxruntime" not in identity["engines"]
    first, second = tmp_path / "a", tmp_path / "b"
    for folder, data in ((first, b"one recognizer"), (second, b"another recognizer")):
        folder.mkdir()
        (folder / "easyocr-english_g2.onnx").write_bytes(data)
    keys = [
        choice_identity(EasyOCR, {"recognizer": "onnx", "recognizer_dir": str(folder)})
        for folder in (first, second)
    ]
    assert keys[0] != keys[1]
    onnx = EasyOCR.cache_identity(recognizer="onnx", recognizer_dir=str(first))
    assert onnx["recognizer"] == {"easyocr-english_g2.onnx": file_sha256(first / "easyocr-english_g2.onnx")}


def test_image_stage_identities_name_opencv():
    import cv2

    for kind, name in (("enhance", "clahe"), ("orient", "hough"), ("channel", "gray")):
        engines = resolve(kind, name, IDCARD).cache_identity()["engines"]
        assert engines["cv2"].endswith(f"=={cv2.__version__}") or cv2.__version__ in engines["cv2"]
    assert resolve("channel", "red", IDCARD).cache_identity() == {}  # array slicing: nothing else decides it


def test_a_changed_default_changes_the_key(monkeypatch):
    sharpen = resolve("enhance", "sharpen", IDCARD)
    key = choice_identity(sharpen, {})
    assert choice_identity(sharpen, {"amount": 1.0, "sigma": 1.0}) == key  # defaults filled in
    monkeypatch.setattr(sharpen.__init__, "__defaults__", (2.0, 1.0))  # a release changes `amount`
    assert choice_identity(sharpen, {}) != key


def test_identity_defaults_agree_with_the_constructors():
    """cache_identity is called with the written parameters: its defaults must be the constructor's."""
    for choices in [*STAGE_BUILTINS.values(), *IDCARD.stages.values()]:
        for target in choices.values():
            cls = import_target(target)
            init = inspect.signature(cls.__init__).parameters
            for name, param in inspect.signature(cls.cache_identity).parameters.items():
                if param.default is not inspect.Parameter.empty:
                    assert init[name].default == param.default, f"{target}: {name}"


# -- in a run -----------------------------------------------------------------------------------------------


def retrain(source: Path, target: Path, favour_class: int) -> None:
    """A different model file of the same shape: the logits bias pushed towards one class."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(source))
    for index, init in enumerate(model.graph.initializer):
        if init.name.startswith("orient_cnn_1/logits_1/BiasAdd"):
            bias = np.zeros(4, np.float32)
            bias[favour_class] = 50.0
            model.graph.initializer[index].CopyFrom(numpy_helper.from_array(bias, init.name))
    onnx.save(model, str(target))


def orient_digits_spec(source: str, model_dir: Path) -> dict:
    # idcard's orientation CNN on digits: a stage of another task is named by its import path
    cnn = f"{OrientCNN.__module__}:{OrientCNN.__qualname__}"
    orient = {"name": cnn, "params": {"variant": "onnx-int8", "model_dir": str(model_dir)}}
    return {
        "name": "retrained",
        "task": "digits",
        "stages": [{"name": "orient", "choices": [orient]}, {"name": "classify", "choices": ["linear"]}],
        "dataset": {"source": source},
    }


@pytest.fixture
def digits_16(tmp_path) -> tuple[Path, list[bytes]]:
    table = resolve_task("digits").generate("clean", 16, seed=11)
    path = tmp_path / "digits-16.parquet"
    write_table(table, str(path))
    return path, table.column("image").to_pylist()


@pytest.mark.ray
def test_a_retrained_model_misses_the_cache(ray_cluster, tmp_path, digits_16):
    source, images = digits_16
    models, cache_dir = tmp_path / "models", str(tmp_path / "cache")
    models.mkdir()
    retrain(ORIENT_ONNX, models / "orient-cnn-int8.onnx", favour_class=1)  # "turned 90 degrees"
    raw = orient_digits_spec(str(source), models)
    params = raw["stages"][0]["choices"][0]["params"]
    old_base = choice_identity(OrientCNN, params)
    first = evaluate(request_for(raw, tmp_path / "first", cache_dir=cache_dir, calibrate=False))
    assert first.manifest["work"]["orient"]["calls"] == 16

    cache = StageCache(CacheConfig(cache_dir))
    digests = [content_digest(resolve_task("digits").decode(b)) for b in images]
    assert all(cache.get(stage_key(old_base, d)) is not None for d in digests)  # old outputs are there

    retrain(ORIENT_ONNX, models / "orient-cnn-int8.onnx", favour_class=0)  # retrained in place
    assert choice_identity(OrientCNN, params) != old_base
    second = evaluate(request_for(raw, tmp_path / "second", cache_dir=cache_dir, calibrate=False))
    orient = second.manifest["work"]["orient"]
    assert orient["calls"] == 16 and orient["cache_hits"] == 0
    # the old model turned every digit, the new one none: the predictions are the new model's
    one = first.run_dir.read_parquet("items.parquet").sort("item_id")["prediction"].to_list()
    two = second.run_dir.read_parquet("items.parquet").sort("item_id")["prediction"].to_list()
    assert one != two


class WritesAFile:
    """A value whose unpickling creates a file: what a tampered shared cache could run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.ray
def test_a_planted_pickle_is_refused_and_counts_as_a_miss(ray_cluster, tmp_path, digits_16):
    import diskcache

    source, images = digits_16
    cache_dir, marker = tmp_path / "cache", tmp_path / "pwned"
    raw = {
        "name": "planted",
        "task": "digits",
        "stages": [{"name": "preprocess", "choices": ["none"]}, {"name": "classify", "choices": ["linear"]}],
        "dataset": {"source": str(source)},
    }
    task = resolve_task("digits")
    base = choice_identity(resolve("preprocess", "none", task), {})
    with diskcache.Cache(str(cache_dir)) as store:  # diskcache's default Disk pickles what it is given
        for data in images:
            store.set(stage_key(base, content_digest(task.decode(data))), WritesAFile(marker))
    assert pickle.loads(pickle.dumps(WritesAFile(tmp_path / "probe"))) is not None
    assert (tmp_path / "probe").exists()  # the planted value does run code when unpickled

    result = evaluate(request_for(raw, tmp_path / "run", cache_dir=str(cache_dir), calibrate=False))
    work = result.manifest["work"]["preprocess"]
    assert work["calls"] == 16 and work["cache_hits"] == 0
    assert not marker.exists()
    items = result.run_dir.read_parquet("items.parquet")
    assert items["error"].null_count() == 16


def test_the_default_models_folder_is_the_checkouts_wherever_one_stands(tmp_path, monkeypatch):
    from raypipe.engine.models import MODELS_DIR_ENV_VAR, default_models_dir

    monkeypatch.delenv(MODELS_DIR_ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)  # no models/ here: an actor's working directory is not the checkout
    assert default_models_dir() == REPO / "models" and (REPO / "models" / "orient-cnn-int8.onnx").is_file()
