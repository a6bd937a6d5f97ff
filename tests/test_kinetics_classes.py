"""Kinetics class sets get the reference's class order, from the official CSVs and folders.

The reference's lists (resources/kinetics/label_map_k*.txt) are what every
published head assumes. The official K400 CSV spells 13 classes differently;
the pairs below were read off the official CSV's class names (sorted, they
line up index by index with label_map_k400.txt).
"""

from __future__ import annotations

import random

import pytest

from data_prep import lists
from vmae2_jax.conversion import labels
from vmae2_jax.data import kinetics

# label_map_k400.txt name -> the official K400 CSV's name for that class.
OFFICIAL_K400 = {
    "inflating balloons": "balloon blowing", "changing wheel (not on bike)": "changing wheel",
    "cooking sausages (not on barbeque)": "cooking sausages", "sipping cup": "drinking",
    "dyeing hair": "dying hair", "person collecting garbage": "garbage collecting",
    "hugging baby": "hugging", "making the bed": "making bed",
    "opening wine bottle": "opening bottle", "picking apples": "picking fruit",
    "skiing mono": "skiing (not slalom or crosscountry)", "smelling feet": "sniffing",
    "tying necktie": "tying tie"}


def official_k400() -> list[str]:
  return [OFFICIAL_K400.get(n, n) for n in labels.class_names("k400")]


def kinetics_csv(names, header="label,youtube_id,time_start,time_end,split,is_cc", seed=0):
  """An official-format CSV: one row per class (shuffled), as the downloads have them."""
  rows = [f'"{n}",yt{i:05d},{10 * i},{10 * i + 10},train' + (",0" if "is_cc" in header else "")
          for i, n in enumerate(names)]
  random.Random(seed).shuffle(rows)
  return [header] + rows


def test_official_k400_names_sorted_are_the_reference_order():
  names = official_k400()
  assert names == sorted(names)  # the fact that makes the reference's K400 order
  assert names != sorted(labels.class_names("k400"))  # ... but not of its renamed list


@pytest.mark.parametrize("dataset", kinetics.SETS)
def test_packaged_lists_identify_themselves_in_any_order(dataset):
  names = list(labels.class_names(dataset))
  random.Random(1).shuffle(names)
  assert kinetics.identify(names) == dataset
  assert kinetics.identify(names[1:]) is None  # a subset is not the set
  assert kinetics.identify(names[1:] + ["not a kinetics class"]) is None


def test_official_k400_csv_gets_the_reference_indices_and_names():
  listing = lists.read_list(kinetics_csv(official_k400()), source="k400_train.csv")
  assert listing.names == list(labels.class_names("k400"))
  by_yid = {e.path.split("/")[-1].split("_")[0]: e.label for e in listing.entries}
  assert by_yid["yt00012"] == 12  # "balloon blowing" is "inflating balloons" at 12
  assert all(by_yid[f"yt{i:05d}"] == i for i in range(400))


@pytest.mark.parametrize("dataset", ["k600", "k700"])
def test_k600_k700_csv_use_the_reference_order_not_sorted(dataset):
  ref = list(labels.class_names(dataset))
  # Spelled as other lists do: lower case "american", a name with '_' for spaces.
  spelled = [n.replace("American", "american") for n in ref]
  spelled[5] = spelled[5].replace(" ", "_")
  listing = lists.read_list(kinetics_csv(spelled, "label,youtube_id,time_start,time_end,split"),
                            source=f"{dataset}.csv")
  assert listing.names == ref and ref != sorted(ref)
  assert all(e.label == int(e.path.split("/")[-1][2:7]) for e in listing.entries)


def test_class_folders_of_kinetics_700_with_underscores(tmp_path):
  ref = list(labels.class_names("k700"))
  for i, n in enumerate(ref):
    d = tmp_path / n.replace(" ", "_")
    d.mkdir()
    if i in (0, 1, 699):
      (d / f"clip{i}.mp4").write_bytes(b"")
  listing = lists.scan_folder(str(tmp_path))
  assert listing.names == ref
  got = {e.path.split("/")[0]: e.label for e in listing.entries}
  assert got == {ref[i].replace(" ", "_"): i for i in (0, 1, 699)}


def test_labels_file_in_another_order_is_refused_with_the_differences():
  ref = list(labels.class_names("k600"))
  with pytest.raises(lists.ListError, match=r"--labels=labels.txt .*K600 in an order other "
                     r"than the reference's .*600 of 600 class names differ: index 0: "
                     r"'abseiling' vs 'feeding fish'"):
    lists.read_list(kinetics_csv(ref), source="k600.csv", label_names=sorted(ref),
                    labels_file="labels.txt")
  # The reference's own list is accepted as --labels, also for a split that lacks some
  # classes and spells them as the official K400 CSV does.
  listing = lists.read_list(kinetics_csv(ref), label_names=ref, labels_file="labels.txt")
  assert listing.names == ref
  k400 = list(labels.class_names("k400"))
  listing = lists.read_list(kinetics_csv(official_k400()[:20]), label_names=k400)
  assert listing.names == k400
  assert all(e.label == int(e.path.split("/")[-1][2:7]) for e in listing.entries)


def test_other_class_sets_keep_sorted_order():
  names = [f"class {i:03d}" for i in range(400)]  # 400 classes, but not Kinetics'
  listing = lists.read_list(kinetics_csv(names[::-1]), source="mine.csv")
  assert listing.names == names
  k400 = official_k400()
  listing = lists.read_list(kinetics_csv(k400[:200]), source="mini.csv")  # a subset
  assert listing.names == sorted(k400[:200])


def test_name_differences_counts_and_folds():
  ref = list(labels.class_names("k400"))
  assert kinetics.name_differences(official_k400(), ref) == ""  # renames are the same class
  assert kinetics.name_differences(ref[:10], ref) == "10 classes vs 400"
  moved = ref[1:5] + ref[:1] + ref[5:]
  assert kinetics.name_differences(moved, ref) == (
      "5 of 400 class names differ: index 0: 'air drumming' vs 'abseiling'; index 1: "
      "'answering questions' vs 'air drumming'; index 2: 'applauding' vs 'answering "
      "questions' (+2 more)")


def test_resumed_or_reevaluated_run_checks_its_data_against_model_json(tmp_path):
  import json
  from types import SimpleNamespace

  from vmae2_jax.conversion.report import ConversionError
  from vmae2_jax.training.trainer import _check_class_names
  ref = list(labels.class_names("k400"))
  (tmp_path / "model.json").write_text(json.dumps({"class_names": ref}))
  run = lambda names: SimpleNamespace(task=SimpleNamespace(class_names=names))
  _check_class_names(str(tmp_path), run(official_k400()))  # the same classes, CSV spelling
  with pytest.raises(ConversionError, match=r"not the model's .*400 of 400 class names "
                     r"differ: index 0: 'zumba' vs 'abseiling'"):
    _check_class_names(str(tmp_path), run(ref[::-1]))
