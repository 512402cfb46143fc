"""The data sets of the paper: their classes, label names, input size and size of the training set."""

from __future__ import annotations

from dataclasses import dataclass, field

CIFAR10_LABELS = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SVHN_LABELS = tuple(str(d) for d in range(10))  # torchvision's SVHN maps the digit 0 to label 0
CIFAR100_LABELS = (
    "apple",
    "aquarium_fish",
    "baby",
    "bear",
    "beaver",
    "bed",
    "bee",
    "beetle",
    "bicycle",
    "bottle",
    "bowl",
    "boy",
    "bridge",
    "bus",
    "butterfly",
    "camel",
    "can",
    "castle",
    "caterpillar",
    "cattle",
    "chair",
    "chimpanzee",
    "clock",
    "cloud",
    "cockroach",
    "couch",
    "crab",
    "crocodile",
    "cup",
    "dinosaur",
    "dolphin",
    "elephant",
    "flatfish",
    "forest",
    "fox",
    "girl",
    "hamster",
    "house",
    "kangaroo",
    "keyboard",
    "lamp",
    "lawn_mower",
    "leopard",
    "lion",
    "lizard",
    "lobster",
    "man",
    "maple_tree",
    "motorcycle",
    "mountain",
    "mouse",
    "mushroom",
    "oak_tree",
    "orange",
    "orchid",
    "otter",
    "palm_tree",
    "pear",
    "pickup_truck",
    "pine_tree",
    "plain",
    "plate",
    "poppy",
    "porcupine",
    "possum",
    "rabbit",
    "raccoon",
    "ray",
    "road",
    "rocket",
    "rose",
    "sea",
    "seal",
    "shark",
    "shrew",
    "skunk",
    "skyscraper",
    "snail",
    "snake",
    "spider",
    "squirrel",
    "streetcar",
    "sunflower",
    "sweet_pepper",
    "table",
    "tank",
    "telephone",
    "television",
    "tiger",
    "tractor",
    "train",
    "trout",
    "tulip",
    "turtle",
    "wardrobe",
    "whale",
    "willow_tree",
    "wolf",
    "woman",
    "worm",
)


@dataclass(frozen=True)
class Dataset:
    name: str  # as a reader knows it
    num_classes: int
    # None for Tiny ImageNet: its label names are the WordNet ids of the copy it is trained on, written into a
    # checkpoint's config when it is trained, not guessed here.
    label_names: tuple[str, ...] | None
    input_size: tuple[int, int, int]
    train_images: int
    hub_id: str  # the data set on the Hub, for model-card metadata
    test_split: str = "test"  # the split a model is tested on (Tiny ImageNet: its labelled validation set)
    torchvision: bool = True  # torchvision can download it
    # The paper's training settings that differ from CIFAR-10's (Sec. 4.1): a config that names the data set and
    # not these keys gets them.
    recipe: dict = field(default_factory=dict)


DATASETS = {
    "cifar10": Dataset("CIFAR-10", 10, CIFAR10_LABELS, (3, 32, 32), 50_000, "uoft-cs/cifar10"),
    "svhn": Dataset(
        "SVHN",
        10,
        SVHN_LABELS,
        (3, 32, 32),
        73_257,
        "ufldl-stanford/svhn",
        recipe={"lr_per_128": 0.01, "attack_step_size": "1/255", "augment": False},
    ),
    "cifar100": Dataset("CIFAR-100", 100, CIFAR100_LABELS, (3, 32, 32), 50_000, "uoft-cs/cifar100"),
    "tiny_imagenet": Dataset(
        "Tiny ImageNet",
        200,
        None,
        (3, 64, 64),
        100_000,
        "zh-plus/tiny-imagenet",
        test_split="validation",
        torchvision=False,
    ),
}


def tag_dataset(tag: str) -> str:
    """The data set a tag ends with: "at_cifar10" and "at_nfgsm_15ep_cifar10" -> "cifar10"."""
    found = [key for key in DATASETS if tag.endswith(f"_{key}")]
    if not found:
        raise ValueError(f"tag {tag!r} does not end with a data set's name ({', '.join(DATASETS)})")
    return found[0]
