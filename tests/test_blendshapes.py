from koemorph import blendshapes as bs


def test_apple_order_matches_unreal_enum_positions():
    assert bs.ARKIT_NAMES[0] == "eyeBlinkLeft"
    assert bs.ARKIT_NAMES[17] == "jawOpen"
    assert bs.ARKIT_NAMES[15:17] == ("jawLeft", "jawRight")
    assert bs.ARKIT_NAMES[21:23] == ("mouthLeft", "mouthRight")
    assert bs.ARKIT_NAMES[46] == "cheekPuff"
    assert bs.ARKIT_NAMES[51] == "tongueOut"
    assert len(bs.ARKIT_NAMES) == 52


def test_alphabetical_order():
    assert bs.ALPHABETICAL_NAMES[0] == "browDownLeft"
    assert bs.ALPHABETICAL_NAMES[8:10] == ("eyeBlinkLeft", "eyeBlinkRight")
    assert bs.ALPHABETICAL_NAMES[24] == "jawOpen"
    assert sorted(bs.ALPHABETICAL_NAMES) == list(bs.ALPHABETICAL_NAMES)


def test_groups_are_derived_from_names():
    assert len(bs.MOUTH_NAMES) == 28 and len(bs.EXPRESSION_NAMES) == 24
    assert all(n.startswith(("jaw", "mouth")) or n == "tongueOut" for n in bs.MOUTH_NAMES)
    assert "cheekPuff" in bs.EXPRESSION_NAMES and "tongueOut" in bs.MOUTH_NAMES
    assert sorted(bs.MOUTH_INDICES + bs.EXPRESSION_INDICES) == list(range(52))
    assert [bs.ARKIT_NAMES[i] for i in bs.MOUTH_INDICES] == list(bs.MOUTH_NAMES)
    assert set(bs.CLOSURE_NAMES) <= set(bs.MOUTH_NAMES)
    assert "eyeBlinkLeft" not in bs.UPPER_FACE_NAMES and "browInnerUp" in bs.UPPER_FACE_NAMES


def test_case_insensitive_lookup():
    assert bs.index_of("JawOpen") == 17
    assert bs.canonical_name("MOUTHCLOSE") == "mouthClose"
    assert bs.canonical_name("HeadYaw") is None
