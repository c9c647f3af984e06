"""Reading datasets in their native layouts: image files, the labelled expression formats (registered in
`fer_formats`), VGGFace2, verification pairs and class folders."""
