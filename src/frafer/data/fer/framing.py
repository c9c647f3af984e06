"""How a dataset's faces are framed, recorded in every bundle so that predict frames detected faces the same way.

A classifier only knows the crops it was trained on: a detected face cut with a different margin, aspect or colour
is, to it, a different distribution (the `fer` package loses 15 points on FER2013 from its crop padding alone). So
every bundle records the framing of its training faces, and `predict` cuts detected faces the same way:

    box      the detector's box, widened by `margin` (a fraction of its side, each side), made square
    aligned  a similarity transform taking the 5 landmarks onto `template` (unit coordinates of the output crop);
             falls back to `box` where the detector gives no landmarks
    grey     the training faces were grey (FER2013, FERPlus): colour photos are turned grey, as 3 equal channels

The presets per data format are in FRAMINGS; `framing_for_format` picks one; `frafer.infer.face_crop` cuts a face
as a Framing says.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from frafer.errors import FraferError

# The 5-point template (left eye, right eye, nose, left and right mouth corner) of the common 112 px face
# alignment, in unit coordinates of the crop: what RAF-DB's aligned crops and most aligned face sets use.
ALIGNED_TEMPLATE = ((0.3419, 0.4616), (0.6565, 0.4598), (0.5002, 0.6405), (0.3705, 0.8247), (0.6315, 0.8232))
# FER2013's own framing as a 5-point template: MTCNN's mean landmarks on 1,706 FER+ Train crops (labels unused),
# in unit coordinates of the 48 px crop. Eyes sit higher and wider than in the 112 px template: FER faces are tight.
# `python benchmarks/framing.py BUNDLE --format ferplus --root FERPLUS --split val --template-faces 2000` prints it.
FER2013_TEMPLATE = ((0.3214, 0.3843), (0.6805, 0.3765), (0.5002, 0.5916), (0.3532, 0.7830), (0.6545, 0.7769))


@dataclass(frozen=True)
class Framing:
    name: str
    method: str = "box"  # "box" | "aligned"
    margin: float = 0.0  # box: fraction of the box side added on each side
    grey: bool = False
    template: tuple[tuple[float, float], ...] = field(default=ALIGNED_TEMPLATE)  # aligned only
    note: str = ""

    def __post_init__(self) -> None:
        if self.method not in ("box", "aligned"):
            raise FraferError(f"framing '{self.name}': method must be 'box' or 'aligned', got {self.method!r}")
        if not -0.4 < self.margin < 2.0:
            raise FraferError(f"framing '{self.name}': margin {self.margin} is outside (-0.4, 2)")
        if len(self.template) != 5:
            raise FraferError(f"framing '{self.name}': the alignment template needs 5 points")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Framing:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if "template" in known:
            known["template"] = tuple(tuple(float(c) for c in p) for p in known["template"])
        return cls(**known)


FRAMINGS: dict[str, Framing] = {
    # FER2013 / FERPlus: 48 px grey crops, the face nearly filling the frame (brows to chin, ears cut). Chosen on
    # FER+ Valid through MTCNN (benchmarks/framing.py; README): aligning onto FER's own template scores as the
    # dataset crops do (75.7 against 75.3 %), the box alone 73.6 at margin 0, 75.4 at -0.05, 52.8 at +0.2. Without
    # landmarks (Haar) the box with margin -0.05 is used.
    "fer2013": Framing("fer2013", "aligned", margin=-0.05, grey=True, template=FER2013_TEMPLATE,
                       note="5-point alignment onto FER2013's own framing, grey"),
    # RAF-DB's aligned 100 px crops: 5-point similarity alignment.
    "rafdb": Framing("rafdb", "aligned", note="5-point similarity alignment, as RAF-DB's aligned crops"),
    # AffectNet: the annotated face box.
    "affectnet": Framing("affectnet", "box", margin=0.0, note="the face box, as AffectNet's annotations"),
    # frafer's synthetic faces: the head fills about 84 % of the image height, and MTCNN boxes the inner face;
    # 0.2 was best of 0, 0.1, 0.2, 0.3, 0.4 for a model trained on whole synthetic images (tests/infer/test_infer.py).
    "synthetic": Framing("synthetic", "box", margin=0.2, note="frafer's synthetic faces"),
    # Class folders of unknown provenance: a small margin around the detector box.
    "box": Framing("box", "box", margin=0.1, note="detector box with a 10 % margin"),
}


def framing_for_format(data_format: str) -> Framing:
    """The preset for a `data.format` (fer2013 and ferplus share one; folders get the generic box)."""
    key = {"ferplus": "fer2013", "folders": "box"}.get(data_format, data_format)
    return FRAMINGS.get(key, FRAMINGS["box"])
