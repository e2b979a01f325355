"""Try it yourself: draw a digit, upload a picture or pick a test image, and see what the network
makes of it, after the same preprocessing that made MNIST (dlcore.views.draw).

Session state: "draw.source", "draw.canvas", "draw.upload", "draw.example" (widgets),
"draw.input", the uint8 (1, 28, 28) tensor the network was shown (None when there is none), and
"draw.prepared": (the upload's id, its dlcore.views.draw.Prepared or the refusal's message), so a
file is decoded once per upload, not on every rerun."""

from __future__ import annotations

import hashlib
import inspect

import streamlit as st

from app_pages import common
from dlcore.figures import image_heatmap, probability_bars
from dlcore.text import markdown_literal
from dlcore.views.draw import (
    BOX,
    FIELD,
    MAX_BYTES,
    MAX_PIXELS,
    ImageError,
    Prepared,
    accepts_shape,
    canvas_to_mnist,
    decode_image,
    image_to_png,
    predict,
    prepare_upload,
    to_mnist,
)

try:  # a custom component: optional, and its import needs a running Streamlit
    from streamlit_drawable_canvas import st_canvas
except Exception:  # noqa: BLE001 - missing, or incompatible with this Streamlit
    st_canvas = None

S = st.session_state
KEEP = dict(persist_state="session")
MAX_UPLOAD_BYTES = MAX_BYTES
MAX_UPLOAD_PIXELS = MAX_PIXELS
EXAMPLES = 50
CANVAS_SIDE = 280
# Material icons ship with Streamlit; emoji are empty boxes where the machine has no emoji font.
SOURCES = {"draw": ":material/draw: Draw", "upload": ":material/upload_file: Upload a picture",
           "example": ":material/image: A test image"}


def canvas_input():
    """The drawing as an MNIST tensor, or None with a hint while the canvas is empty."""
    if st_canvas is None:
        st.info("The drawing canvas needs the `streamlit-drawable-canvas` package "
                "(`pip install streamlit-drawable-canvas`). Meanwhile, upload a picture or pick a "
                "test image.")
        return None
    options = dict(fill_color="rgba(0, 0, 0, 0)", stroke_width=18, stroke_color="#FFFFFF",
                   background_color="#000000", height=CANVAS_SIDE, width=CANVAS_SIDE,
                   drawing_mode="freedraw", key="draw.canvas")
    if "return_image_data" in inspect.signature(st_canvas).parameters:  # 0.13 asks for it
        options["return_image_data"] = True
    st.caption("Draw one digit in the black square; its toolbar undoes or clears the drawing.")
    result = st_canvas(**options)
    rgba = getattr(result, "image_data", None) if result is not None else None
    if rgba is None:
        return None
    try:
        return canvas_to_mnist(rgba)
    except ImageError:
        return None  # nothing drawn yet


def prepared_upload(upload) -> Prepared | str:
    """The upload decoded and preprocessed, or the refusal's message (markdown, the file's name
    escaped); worked out once per upload (keyed by its file id) and kept in session state, so
    reruns do not decode the file again."""
    key = getattr(upload, "file_id", None) or hashlib.sha256(upload.getbuffer()).hexdigest()
    cached = S.get("draw.prepared")
    if cached is not None and cached[0] == key:
        return cached[1]
    try:
        outcome: Prepared | str = prepare_upload(upload.getvalue(), MAX_UPLOAD_BYTES,
                                                 MAX_UPLOAD_PIXELS, preview_side=2 * CANVAS_SIDE)
    except ImageError as exc:
        outcome = f"{markdown_literal(upload.name)} cannot be used: {exc}"
    S["draw.prepared"] = (key, outcome)
    return outcome


def upload_input():
    upload = st.file_uploader("A picture of one digit (PNG or JPEG)", type=["png", "jpg", "jpeg"],
                              key="draw.upload",
                              help="Dark ink on light paper or light ink on a dark background both "
                                   f"work. At most {MAX_UPLOAD_BYTES // 1_000_000} MB and "
                                   f"{MAX_UPLOAD_PIXELS:,} pixels (a larger JPEG photo is "
                                   "scaled down as it is read).")
    if upload is None:
        S.pop("draw.prepared", None)
        st.caption("A photo of a digit on paper works best cropped close, evenly lit.")
        return None
    outcome = prepared_upload(upload)
    if isinstance(outcome, str):
        st.error(outcome)
        return None
    st.image(outcome.preview, caption=f"{markdown_literal(upload.name)}, as uploaded", width=CANVAS_SIDE)
    return outcome.tensor


def example_input(dataset):
    count = min(EXAMPLES, len(dataset.test_y))
    labels = dataset.test_y[:count].tolist()
    if S.get("draw.example") not in range(count):
        S["draw.example"] = 0
    st.selectbox("Test image", list(range(count)), key="draw.example", **KEEP,
                 format_func=lambda i: f"#{i} (labelled {dataset.classes[labels[i]]})")
    raw = dataset.test_x[S["draw.example"]]
    st.image(raw[0].numpy(), caption="The test image, as stored", width=CANVAS_SIDE // 2)
    st.caption("It goes through the same path as an upload: encoded as a PNG file, decoded, "
               "re-centred.")
    return to_mnist(decode_image(image_to_png(raw)))


def answer_section(view, tensor) -> None:
    classes = list(view.dataset.classes)
    probs = predict(view.model, view.model_input, tensor)
    order = probs.argsort()[::-1]
    best, second = int(order[0]), int(order[1])
    st.markdown(f"The network says **{classes[best]}**, {probs[best]:.0%} sure "
                f"(next: {classes[second]}, {probs[second]:.0%}).")
    st.plotly_chart(probability_bars(probs, classes, "Class probabilities"), key="draw.probs")
    st.plotly_chart(image_heatmap(tensor[0].numpy(), f"What the network sees ({FIELD}×{FIELD})",
                                  height=300), key="draw.seen")


st.title("Try it yourself")
view = common.current_view()
if view is None:
    common.no_run_message()
    st.stop()

dataset = view.dataset
if not accepts_shape(dataset.shape):
    c, h, w = dataset.shape
    S["draw.input"] = None
    st.info(f"This page works with the {FIELD}×{FIELD} greyscale datasets (MNIST, Fashion-MNIST, "
            f"KMNIST). The current model was trained on {common.dataset_title(dataset.name)}, "
            f"whose images are {c}×{h}×{w}: train one on an MNIST-family dataset to try it.")
    st.stop()

run = f"run {view.run_id}" if view.run_id is not None else "this session's run"
st.caption(f"The model of {run}, trained on {common.dataset_title(dataset.name)} "
           f"(test accuracy {view.test_acc:.2%}).")
if dataset.name == "fashion-mnist":
    st.caption("This model knows clothes, not digits: a drawn T-shirt or trouser may work, "
               "but the test images are the fairer try.")

if S.get("draw.source") not in SOURCES:
    S["draw.source"] = "draw" if st_canvas is not None else "upload"
st.radio("Input", list(SOURCES), key="draw.source", format_func=SOURCES.get, horizontal=True,
         **KEEP)

left, right = st.columns(2)
with left:
    source = S["draw.source"]
    if source == "draw":
        tensor = canvas_input()
    elif source == "upload":
        tensor = upload_input()
    else:
        tensor = example_input(dataset)
    with st.expander("How a picture becomes an MNIST image"):
        st.markdown(
            "1. Made grey; inverted if the background is light (MNIST is white ink on black).\n"
            f"2. Cropped to the ink, then scaled so its longer side is {BOX} pixels, keeping its "
            "shape (antialiased).\n"
            f"3. Placed in a {FIELD}×{FIELD} square so that its centre of mass is at the centre, "
            "as the makers of MNIST did.\n\n"
            "A digit drawn small, thin or off-centre is therefore seen much like a big one.")
S["draw.input"] = tensor
with right:
    if tensor is None:
        st.info("Draw, upload or pick an image to see what the network makes of it.")
    else:
        answer_section(view, tensor)
