"""Model ``sam3d_body``: SAM 3D Body (task generate_body), the people of a picture as posed MHR meshes."""
