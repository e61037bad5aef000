"""Patch sampling and lesion copy-paste (``medtool.datasets``) on small hand-checkable caches."""

import numpy as np
import pytest
from scipy import ndimage

from medtool.errors import InputError, UsageError
from medtool.datasets import MIN_PASTE_VOXELS, Paste, PatchDataset, crop, objects

#: Cached (normalised) intensities of the two halves of the background and of the lesions.
DARK, BRIGHT, LESION = 0.1, 0.9, 0.5


def test_objects_are_the_components_of_each_class():
    labels = np.zeros((4, 6, 6), np.uint8)
    labels[0:2, 0:2, 0:3] = 1          # 12 voxels
    labels[3, 5, 5] = 1                # 1 voxel, not face-connected to the first
    labels[1:4, 3:6, 3:5] = 2          # 18 voxels
    assert objects(labels, 3) == [[1, 12, 0, 0, 0, 2, 2, 3], [1, 1, 3, 5, 5, 4, 6, 6],
                                  [2, 18, 1, 3, 3, 4, 6, 5]]
    assert objects(np.zeros((2, 2, 2), np.uint8), 2) == []


def test_crop_pads_outside_the_array():
    array = np.arange(4 * 4).reshape(1, 4, 4)
    out = crop(array, [0, -1, 2], [1, 3, 3], pad=-1)
    assert out.tolist() == [[[-1, -1, -1], [2, 3, -1], [6, 7, -1]]]


def _case(tmp_path, name, lesion):
    """A cached case: a 12 x 20 x 20 image, dark (y < 10) and bright halves, one lesion
    (slices given by ``lesion``) of label 1."""
    image = np.full((1, 12, 20, 20), BRIGHT, np.float32)
    image[:, :, :10] = DARK
    mask = np.zeros((12, 20, 20), np.uint8)
    mask[lesion] = 1
    image[(0, *lesion)] = LESION
    paths = {k: str(tmp_path / f"{name}_{k}.npy") for k in ("image", "mask")}
    np.save(paths["image"], image[0])
    np.save(paths["mask"], mask)
    paths["locations"] = str(tmp_path / f"{name}_fg.npz")
    np.savez(paths["locations"], class_1=np.argwhere(mask == 1).astype(np.int32))
    return {**paths, "objects": objects(mask, 2)}


@pytest.fixture
def cases(tmp_path):
    return [_case(tmp_path, "a", (slice(1, 4), slice(1, 4), slice(1, 4))),       # a 27-voxel cube
            _case(tmp_path, "b", (slice(8, 10), slice(15, 17), slice(15, 17)))]  # 8 voxels


def _pairs(cases, paste, *, patch=(8, 12, 12), items=40, two_d=False):
    """(plain patch, the same patch with paste) for ``items`` draws; the patch window is the
    same in both, since the paste draws come after it."""
    plain = PatchDataset(cases, patch=patch, length=items, pos_ratio=0.0, seed=3, two_d=two_d)
    pasted = PatchDataset(cases, patch=patch, length=items, pos_ratio=0.0, seed=3, two_d=two_d, paste=paste)
    for item in range(items):
        (x0, y0), (x1, y1) = plain[item], pasted[item]
        yield x0.numpy(), y0.numpy(), x1.numpy(), y1.numpy()


def test_paste_adds_a_whole_object_with_its_intensities_and_label(cases):
    sizes = []
    for x0, y0, x1, y1 in _pairs(cases, Paste(1.0, (1.0, 1.0))):
        changed = y1 != y0
        assert not (y0[changed] > 0).any()                       # never over other foreground
        assert (y1[changed] == 1).all() and np.allclose(x1[0][changed], LESION)
        assert ((x1 != x0)[0] <= changed).all()                  # nothing else touched
        sizes.append(int(changed.sum()))
        if changed.any():                                        # one connected object
            assert ndimage.label(changed)[1] == 1
    # objects are drawn uniformly over the two cases' lesions: the cube and the 8-voxel block
    assert set(sizes) <= {0, 27, 8} and sizes.count(27) > 5 and sizes.count(8) > 5


def test_paste_zooms_the_object(cases):
    sizes = {int((y1 != y0).sum()) for x0, y0, x1, y1 in _pairs(cases, Paste(1.0, (2.0, 2.0)))}
    assert sizes <= {0, 6 ** 3, 4 ** 3} and 6 ** 3 in sizes      # 3 -> 6 and 2 -> 4 voxels a side


def test_paste_lands_only_on_the_given_intensities(cases):
    into = (DARK - 0.05, DARK + 0.05)
    landed = 0
    for x0, y0, x1, y1 in _pairs(cases, Paste(1.0, (1.0, 1.0), into)):
        changed = y1 != y0
        assert np.allclose(x0[0][changed], DARK)                 # only dark voxels took the lesion
        if changed.any():
            landed += 1
            assert changed.sum() >= 4                            # at least half of the smaller one
    assert landed > 20


def test_small_objects_are_not_pasted(tmp_path):
    case = _case(tmp_path, "c", (slice(2, 3), slice(2, 3), slice(2, MIN_PASTE_VOXELS + 1)))
    assert case["objects"][0][1] == MIN_PASTE_VOXELS - 1
    for x0, y0, x1, y1 in _pairs([case], Paste(1.0)):
        assert (y1 == y0).all() and (x1 == x0).all()


def test_a_2d_patch_takes_one_slice_of_the_object(cases):
    sizes = {int((y1 != y0).sum()) for x0, y0, x1, y1 in _pairs(cases, Paste(1.0, (1.0, 1.0)),
                                                               patch=(1, 12, 12), two_d=True)}
    assert sizes <= {0, 9, 4} and 9 in sizes and 4 in sizes


def test_paste_is_reproducible_and_off_by_default(cases):
    dataset = PatchDataset(cases, patch=(8, 12, 12), length=4, seed=5, paste=Paste(0.5))
    dataset.set_epoch(2)
    for item in range(4):
        (xa, ya), (xb, yb) = dataset[item], dataset[item]
        assert (xa == xb).all() and (ya == yb).all()
    off = PatchDataset(cases, patch=(8, 12, 12), length=4, seed=5, paste=Paste(0.0))
    assert off.paste is None


# -- folds CSVs and the split -------------------------------------------------------------------

def _folds_csv(tmp_path, rows):
    path = tmp_path / "folds.csv"
    path.write_text("case_id,fold\n" + "".join(f"{c},{f}\n" for c, f in rows))
    return path


def test_held_out_test_cases_are_neither_trained_nor_validated(tmp_path):
    from medtool.datasets import Case, numbered_folds, read_folds, split_cases

    folds = read_folds(_folds_csv(tmp_path, [("a", 0), ("b", 1), ("c", "test"), ("d", 1), ("e", 0)]))
    assert folds == {"a": 0, "b": 1, "c": "test", "d": 1, "e": 0} and numbered_folds(folds) == [0, 1]
    cases = [Case(name, tmp_path / f"{name}.npy") for name in "abcde"]
    train, val = split_cases(cases, folds=folds, fold=1)
    assert [c.case_id for c in train] == ["a", "e"] and [c.case_id for c in val] == ["b", "d"]
    with pytest.raises(UsageError, match=r"folds \[0, 1\] \(and held-out test cases"):
        split_cases(cases, folds=folds, fold=2)


def test_a_fold_that_is_neither_a_number_nor_test_is_refused(tmp_path):
    from medtool.datasets import read_folds

    with pytest.raises(InputError, match="'val' of b is neither a number nor 'test'"):
        read_folds(_folds_csv(tmp_path, [("a", 0), ("b", "val")]))


def test_loader_workers_draw_each_epochs_patches_as_the_main_process_does(cases):
    """Persistent DataLoader workers hold copies of the data set: the epoch set after they
    started must reach them (it did not: every epoch drew epoch 0's patches)."""
    import torch
    from torch.utils.data import DataLoader

    from medtool.classify import ClassDataset

    dataset = PatchDataset(cases, patch=(4, 6, 6), length=6, pos_ratio=0.5, seed=7)
    loader = DataLoader(dataset, batch_size=6, num_workers=2, persistent_workers=True)
    drawn = []
    for epoch in range(2):
        dataset.set_epoch(epoch)
        (images, _), = list(loader)
        expected = torch.stack([dataset[i][0] for i in range(6)])
        assert torch.equal(images, expected), epoch
        drawn.append(images)
    assert not torch.equal(drawn[0], drawn[1])
    whole = ClassDataset([{"image": c["image"], "label": i} for i, c in enumerate(cases)], length=8, seed=1)
    loader = DataLoader(whole, batch_size=8, num_workers=2, persistent_workers=True)
    orders = []
    for epoch in range(3):
        whole.set_epoch(epoch)
        orders.append(next(iter(loader))[1].tolist())
        assert orders[-1] == [whole[i][1].item() for i in range(8)]
    assert len({tuple(o) for o in orders}) > 1
