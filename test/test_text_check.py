"""bqnet_ros.text_check: the cheap English check the node attaches to its answers."""

from __future__ import annotations

import pytest

from bqnet_ros.text_check import english_warning


@pytest.mark.parametrize("text", ["the chair next to the desk", "the helicopter", "red chair",
                                  "the big brown table near the window", "sofa", "Find the TV please"])
def test_english_passes(text):
    assert english_warning(text) is None


@pytest.mark.parametrize("text,part", [
    ("la chaise rouge à côté de la table", "words are common English"),
    ("le lit", "words are common English"),
    ("桌子旁边的椅子", "letters are not a-z"),
    ("стул у окна", "letters are not a-z"),
    ("🪑🪑", "no letters"),
    ("1234 !!", "no letters"),
])
def test_non_english_warns(text, part):
    w = english_warning(text)
    assert w is not None and part in w
