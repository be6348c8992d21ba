"""The forms of the file pages: the editor, a new file or folder, an upload."""

from __future__ import annotations

import re

from django import forms

LF = "lf"
CRLF = "crlf"

# What a new job script starts as: the lines most jobs need, to be changed in the editor.
STARTER_SCRIPT = """#!/bin/bash
#SBATCH --job-name={name}
#SBATCH --time=10
#SBATCH --ntasks=1

# The commands below run on a compute node, in this script's folder.
echo "Running on $(hostname) as $(whoami)"
"""
_JOB_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


def starter_script(file_name: str) -> str:
    """A new script's text; its job name is the file's, without the extension, in characters Slurm keeps."""
    stem = file_name.rsplit(".", 1)[0] if "." in file_name.lstrip(".") else file_name
    return STARTER_SCRIPT.format(name=_JOB_NAME.sub("-", stem).strip("-.")[:64] or "job")


class EditorForm(forms.Form):
    text = forms.CharField(
        required=False,
        strip=False,
        label="Contents",
        widget=forms.Textarea(attrs={"rows": 24, "cols": 100, "spellcheck": "false", "class": "code"}),
    )
    # The SHA-256 of the file as it was opened: saving over a file changed since then is refused.
    version = forms.CharField(max_length=64, widget=forms.HiddenInput)
    line_endings = forms.ChoiceField(choices=[(LF, LF), (CRLF, CRLF)], widget=forms.HiddenInput)

    def content(self) -> bytes:
        """The text as the file will hold it: a browser sends CRLF line breaks, the file keeps its own."""
        text = self.cleaned_data["text"].replace("\r\n", "\n")
        if self.cleaned_data["line_endings"] == CRLF:
            text = text.replace("\n", "\r\n")
        return text.encode()


def line_endings(text: str) -> str:
    return CRLF if "\r\n" in text else LF


class NewForm(forms.Form):
    KINDS = [
        ("script", "Job script (starts with #!/bin/bash and #SBATCH lines, can be run)"),
        ("file", "Empty text file"),
        ("folder", "Folder"),
    ]
    name = forms.CharField(
        max_length=255,
        strip=False,
        help_text="One name, without '/'; it is made in the folder above.",
        widget=forms.TextInput(attrs={"autofocus": True, "placeholder": "job.sh", "autocomplete": "off"}),
    )
    kind = forms.ChoiceField(choices=KINDS, initial="script", label="What", widget=forms.RadioSelect)


class UploadForm(forms.Form):
    file = forms.FileField(label="File", allow_empty_file=True)
    replace = forms.BooleanField(
        required=False,
        label="Replace a file of the same name",
        help_text="Unticked, an upload never overwrites anything.",
    )
