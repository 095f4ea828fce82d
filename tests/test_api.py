"""The public Python API (README "Python API"): the same runs as the CLI, from Python."""
import json

import pytest
import torch

import enas
from enas.errors import UserError
from shared_model.genotype import Genotype
from shared_model.zoo import ZOO

TINY = {"model.channels": 2, "controller.updates_per_epoch": 2, "derive.samples": 2}


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    out = tmp_path_factory.mktemp("api") / "search"
    return enas.run_search(out, preset="quick", epochs=1, batch_size=8, overrides=TINY, progress=False)


def test_run_search_returns_the_derived_genotype(searched):
    assert isinstance(searched, enas.SearchResult) and isinstance(searched.genotype, Genotype)
    assert searched.genotype_path == searched.run_dir / "genotype.json"
    assert enas.load_genotype(searched.run_dir) == searched.genotype
    assert 0.0 <= searched.best_valid_acc <= 1.0


def test_derive_train_evaluate_export(searched, tmp_path):
    again = enas.derive(searched.run_dir, samples=2, progress=False)
    assert again.replaced and again.genotype_path.is_file()
    trained = enas.train(searched.run_dir, tmp_path / "train", epochs=1, batch_size=16, channels=2, layers=3,
                         progress=False)
    assert isinstance(trained, enas.TrainResult) and 0.0 <= trained.test_acc <= 1.0
    assert json.loads((trained.run_dir / "result.json").read_text())["preset"] == "quick"  # from the search
    report = enas.evaluate(trained.run_dir, repeats=1, latency_batch=1)
    assert report["top1"] == pytest.approx(trained.test_acc) and report["test_images"] == 297
    exported = enas.export(trained.run_dir, "torchscript", tmp_path / "m.pt")
    assert exported["path"] == str(tmp_path / "m.pt") and not exported["replaced"]
    with pytest.raises(UserError, match="cannot be given when resuming"):
        enas.train(resume=trained.run_dir, epochs=3)


def test_build_child_is_the_train_network():
    net = enas.build_child("DARTS_V2", channels=4, layers=5, num_classes=7, image_size=[16, 12], in_channels=1)
    logits, aux = net(torch.randn(2, 1, 16, 12))
    assert logits.shape == (2, 7) and aux is None
    assert sum(p.numel() for p in enas.build_child(ZOO["DARTS_V2"]).parameters()) == 3_349_342  # DARTS's count


def test_bad_input_is_one_user_error():
    with pytest.raises(UserError, match="unknown genotype"):
        enas.load_genotype("NOT_A_CELL")
    with pytest.raises(UserError, match="missing GENOTYPE"):
        enas.train()
