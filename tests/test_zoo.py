"""The genotype zoo: contents, lookup and recorded parameter counts."""
import pytest

from shared_model.child import ChildNetwork
from shared_model.genotype import Genotype, loose_ends
from shared_model.profile import count_parameters
from shared_model.macro_arch import MacroArch
from shared_model.zoo import ENAS_MACRO_ARC, ENAS_RELEASED_ARC, ZOO, ZOO_INFO, get_genotype

# Parameters (auxiliary head excluded) at C=36, 20 cells, 10 classes. DARTS_V2
# matches the paper code's 3.349342 M; the other figures were computed once
# with this implementation and are recorded here to catch accidental changes
# to the ops or the network wiring.
EXPECTED_PARAMS = {
    "DARTS_V1": 3_169_414,
    "DARTS_V2": 3_349_342,
    "NASNet": 3_830_950,
    "AmoebaNet": 3_145_078,
    "PDARTS": 3_433_798,
    "PC_DARTS": 3_634_678,
    "ENAS": 3_859_894,
    "ENAS_RELEASED": 4_394_710,
}


def test_zoo_names_and_info():
    assert set(ZOO) == set(EXPECTED_PARAMS) | {"ENAS_MACRO"}
    assert set(ZOO_INFO) == set(ZOO)
    assert all(isinstance(g, Genotype) for name, g in ZOO.items() if name in EXPECTED_PARAMS)
    assert all(ZOO_INFO[name].strip() for name in ZOO)


def test_enas_macro_is_the_official_final_arc():
    arch = get_genotype("enas_macro")
    assert isinstance(arch, MacroArch) and arch.num_layers == 24
    assert arch.to_arc() == " ".join(ENAS_MACRO_ARC.split())
    assert arch.to_arc(per_line=True) == ENAS_MACRO_ARC
    # The final script runs 4 branches: only convs 3x3/5x5 and separable 3x3/5x5 occur.
    assert set(arch.ops) == {"conv_3x3", "sep_conv_3x3", "conv_5x5", "sep_conv_5x5"}
    assert arch.ops[:3] == ("conv_3x3", "sep_conv_5x5", "conv_3x3") and arch.skips[2] == (1, 0)
    assert arch.skip_count() == 98  # of 276 bits: a skip rate of 0.36


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_recorded_parameter_counts(name):
    model = ChildNetwork(ZOO[name], C=36, layers=20, num_classes=10, auxiliary=True)
    assert count_parameters(model) == EXPECTED_PARAMS[name]


def test_get_genotype_is_case_insensitive():
    assert get_genotype("darts_v2") is ZOO["DARTS_V2"]
    assert get_genotype("PC-DARTS") is ZOO["PC_DARTS"]
    assert get_genotype(" nasnet ") is ZOO["NASNet"]


def test_get_genotype_unknown_lists_names():
    with pytest.raises(ValueError) as info:
        get_genotype("DARTS_V3")
    assert "DARTS_V2" in str(info.value) and "ENAS_RELEASED" in str(info.value)


def test_enas_released_is_the_official_arc():
    g = ZOO["ENAS_RELEASED"]
    assert g.to_arc() == " ".join(ENAS_RELEASED_ARC.split())
    assert g.num_nodes("normal") == g.num_nodes("reduce") == 5
    for cell in ("normal", "reduce"):
        entries, concat = g.cell(cell)
        assert concat == loose_ends(entries)
    # Node 0 of the normal cell: in_a 0 op 2 (avg pool), in_b 0 op 0 (sep 3x3).
    assert g.normal[:2] == (("avg_pool_3x3", 0), ("sep_conv_3x3", 0))


def test_darts_v2_cells_as_published():
    g = ZOO["DARTS_V2"]
    assert g.normal[-1] == ("dil_conv_3x3", 2)
    assert g.reduce_concat == (2, 3, 4, 5)
    assert {op for op, _ in g.reduce} == {"max_pool_3x3", "skip_connect"}
